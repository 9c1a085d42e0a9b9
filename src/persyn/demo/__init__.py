"""The offline demo's plug-ins: built-in prompt sets (`prompts`) and programmatic teachers
(`solvers`), the mini-replication's task (`replication`) and the tiny random student tests
and benchmarks build (`tiny_student`). Core modules never import this package:
`persyn.plugins` names its functions as `module:function` strings and loads them the way
it loads a user's own code.
"""
