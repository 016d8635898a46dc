"""The lab machinery, free of Flask: what a lab is (model), reading and validating one
(loader), finding them (catalog), one learner's values and text (params), the author's
API for checks (check), grading an exercise (grade), a lab's setup in a new sandbox
(provision) and `nslab lab test`'s replay (replay).

It talks to sandboxd only through `sandbox.client`, `sandbox.protocol` and
`sandbox.errors`, so the web app and the CLI can both use it.
"""
