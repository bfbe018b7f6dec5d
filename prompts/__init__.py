"""Package data: the class catalogue (classes.yaml), installed as ``universal.prompts``."""
