from crewai import Agent, Crew

writer = Agent(role="writer", goal="write", backstory="b")
