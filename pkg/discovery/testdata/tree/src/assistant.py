from openai import OpenAI
client = OpenAI()
assistant = client.beta.assistants.create(name="Math Tutor", model="gpt-4o")
