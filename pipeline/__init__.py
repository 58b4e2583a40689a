"""landwatch: satellite-image land-use enforcement (卫片执法).

The import package is ``pipeline``; the distribution and the command are ``landwatch``.
"""

__version__ = "0.1.0"
