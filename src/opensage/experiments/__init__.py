"""SageMaker Experiments: experiments, trials, trial components, their metrics, and the jobs they track."""
