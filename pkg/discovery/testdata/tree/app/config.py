import os

# Planted test credentials (fake values for the discovery scanner's tests).
AWS_ACCESS_KEY_ID = "AKIAQ3EGVXJ5PLANTD01"
aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTED001"
OPENAI_API_KEY = "sk-proj-Pl4nt3dOpenAIkeyAbCdEfGhIjKlMnOpQrStUv12"
ANTHROPIC_API_KEY = "sk-ant-api03-Pl4nt3dAnthropicKeyAbCdEfGhIjKlMnOpQrStUvWxYz0123"
db_password = "Zx9qR7vT2mK8pL4wN6sB"
unrelated = "hello world"
api_key = os.environ["API_KEY"]
