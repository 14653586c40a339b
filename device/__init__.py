"""edgesort device side: the daemon that runs a model bundle on a camera loop and drives the sorting gates.

Never imports torch, torchvision, training/ or export/ (see ../shared/DESIGN.md, dependency direction).
"""

__version__ = "0.1.0"
