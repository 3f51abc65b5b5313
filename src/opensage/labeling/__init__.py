"""SageMaker Ground Truth: work teams, labeling jobs, the worker portal and automated labeling.

:mod:`.tasktypes` knows the built-in task types (keyed on AWS's pre-annotation Lambda ARNs): what a
worker answers, how several answers are consolidated, and the output manifest's format;
:mod:`.jobs` drives a labeling job from its input manifest to its output manifest; :mod:`.autolabel`
trains a built-in algorithm on the human labels and takes the confident machine labels; :mod:`.portal`
is the worker portal under :data:`PORTAL_PREFIX`, where the members of a work team sign in and label.
"""

PORTAL_PREFIX = "/_opensage/labeling"
