"""Images present on a host before a roll needs them."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.docker import DockerImage

from ..commands.images import pull


@operation()
def image_pulled(image: str):
    """
    Pull an image unless the host already has it.

    + image: repository and tag, such as ``registry:5000/deploykit/app:v2``

    **Example:**

    .. code:: python

        image_pulled(name="Ensure app:v2 is on the host", image="registry:5000/deploykit/app:v2")
    """
    if host.get_fact(DockerImage, object_id=image):
        host.noop(f"{image} is present")
        return
    yield StringCommand(pull(image))
