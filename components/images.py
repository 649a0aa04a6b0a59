"""Image references for the components: the project's images, tagged with the package version
(``startup_recs.core.images``, the one place image names come from)."""

from startup_recs.core.images import image

CPU_IMAGE = image("base")
GPU_IMAGE = image("trainer-gpu")
