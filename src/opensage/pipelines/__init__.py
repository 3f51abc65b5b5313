"""SageMaker Pipelines: definition parsing and validation, expressions, and the execution controller."""
