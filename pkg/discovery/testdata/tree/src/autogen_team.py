import autogen

assistant = AssistantAgent("assistant", llm_config=cfg)
