"""Model descriptors: what a router knows about a candidate model.

``model``: the validated ``ModelDescriptor``; ``build``: descriptors from probe-split rows;
``render``: the compact text the policy reads; ``catalog``: the YAML catalog format.
"""

from routerl.descriptors.model import DescriptorError, Endpoint, ModelDescriptor
from routerl.descriptors.build import build_descriptor, build_descriptors
from routerl.descriptors.render import render_candidates
from routerl.descriptors.catalog import load_catalog, save_catalog

__all__ = [
    "DescriptorError",
    "Endpoint",
    "ModelDescriptor",
    "build_descriptor",
    "build_descriptors",
    "render_candidates",
    "load_catalog",
    "save_catalog",
]
