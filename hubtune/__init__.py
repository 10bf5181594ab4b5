"""hubtune core: settings, database models, job spec, lifecycle, queue wiring and storage.

Imports none of server/, worker/ or plugin/ (the CLI module is the one edge allowed to start them).
"""

__version__ = "0.1.0"
