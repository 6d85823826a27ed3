"""Training-free dense methods, selectable by name everywhere a model is (``create_model(method=)``,
``GEMModel(method=)``, ``--method``).

Each maps ``(backbone, images [B, 3, H, W], config, *, return_ori=False)`` to ``(tokens [B, N, D],
original tokens [B, N, D] or None)`` after the final norm and projection, so that all of them share the
preprocessing, the text encoding and the evaluation of :class:`~gemseg.GEMModel`. A method declares
what else it needs in :attr:`Method.needs`: ``"proxy"`` (``proxyclip``, ``cass``, ``corrclip``) means it also
takes ``proxy=``, an instance of the function's ``proxy_type`` (:class:`ProxyAttention`, :class:`CASSProxy`,
:class:`CorrCLIPProxy`; ``create_model`` builds it around ``default_proxy``); callers ask
``"proxy" in get_method(name).needs``, never the method's name; ``"masks"`` (``corrclip``) that it takes
``masks=`` label maps [B, H, W] from the model's mask source (:mod:`gemseg.masks`). A function with
``on_proxy_grid = True`` (``proxyclip``, ``corrclip``) returns tokens on the proxy's grid, one with a
``scores`` attribute (``cass``) scores the text itself. ``docs/methods.md`` gives each
method's formula and paper.

====================  =======================================================================
``gem``               GEM (the default); its variants are :class:`~gemseg.GEMConfig` settings
``clip``              raw CLIP patch tokens
``maskclip``          MaskCLIP as released: value path of the last block, residual and MLP kept
``maskclip-vproj``    MaskCLIP as ClearCLIP re-implements it: value path, output projection only
``vv``                CLIP Surgery-style value-value attention path
``sclip``             SCLIP: correlative self-attention (q-q + k-k) in the last block
``clearclip``         ClearCLIP: q-q attention, no residual, no MLP in the last block
``naclip``            NACLIP: k-k attention + Gaussian neighbourhood, no residual, no MLP
``proxyclip``         ProxyCLIP: proxy attention from a vision foundation model (needs ``proxy=``)
``trident``           Trident: windows of CLIP + DINO spliced, aggregated with SAM's attention (``proxy=``
                      a :class:`~gemseg.methods.trident.TridentProxy`)
``sc-clip``           SC-CLIP: anomaly-token repair, self-adjusting attention, multi-level fusion
``sfp``               SFP: outlier mitigation, attention enhancement, multi-layer integration
``<base>+resclip``    ResCLIP as a plug-in on ``sclip``, ``clearclip``, ``naclip``, ``clip``, ``gem`` or
                      ``vv`` (any method declaring its ``attention``): RCS and SFR change the base's
                      last-block attention map (needs the queries' text)
``cass``              CASS: a DINO's spectral graph distilled into the last attention (needs ``proxy=``),
                      and its object-presence prior on the text side
``corrclip``          CorrCLIP: attention rebuilt from class-agnostic masks and DINO (needs ``proxy=``, masks)
====================  =======================================================================

A method may carry ``settings_type`` (a frozen dataclass of its own settings: :class:`SCCLIPConfig`,
:class:`SFPConfig`, :class:`ResCLIPConfig`), which :class:`~gemseg.GEMModel` fills from
``method_settings=`` and passes as ``settings=``; :attr:`Method.needs` ``"text"`` means the model passes
the queries' embeddings as ``text=``, ``"refine"`` its PAMR refiner as ``refine=``. A plug-in is spelled ``<base>+<plug-in>`` and is
parsed here into one registered :class:`Method` (:data:`PLUGINS`); a base qualifies by what it declares
(:attr:`Method.attention`, :mod:`gemseg.methods.attention`), never by its name.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable

from ..config import GEMConfig
from ..gem import gem_tokens
from .attention import AttentionKind, LastBlockAttention, SelfSelfAttention
from .baselines import (NACLIP_STD, clearclip_tokens, clip_tokens, maskclip_tokens, maskclip_vproj_tokens,
                        naclip_tokens, neighbourhood_bias, sclip_tokens, vv_settings, vv_tokens)

from .cass import CASSConfig, CASSProxy, cass_tokens
from .corrclip import CorrCLIPConfig, CorrCLIPProxy, corrclip_tokens
from .proxyclip import ProxyAttention, ProxyCLIPConfig, proxyclip_tokens
from .trident import trident_tokens
from .resclip import ResCLIPConfig, resclip_plugin, resclip_tokens
from .scclip import SCCLIPConfig, scclip_tokens
from .sfp import SFPConfig, sfp_tokens

_SETTINGS = tuple(f.name for f in dataclasses.fields(GEMConfig))
NEEDS = ("proxy", "text", "refine", "masks")  # what a method can declare it needs (Method.needs): a
#                                      ProxyAttention, the queries' text embeddings [Q, D], the model's PAMR
#                                      refiner, mask label maps [B, H, W] (masks=)
_DEFAULTS = GEMConfig()


@dataclass(frozen=True)
class Method:
    """A registered method: its token function, the :class:`~gemseg.GEMConfig` fields it reads and what
    else it needs.

    Calling it runs ``fn`` after warning (once per call site) about settings that differ from their
    defaults but are not in ``uses``. ``uses=None`` declares nothing: no warning, and an ablation
    lets every setting vary.
    """

    name: str  # the name it is registered under
    fn: Callable  # (backbone, images, config, *, return_ori) -> (tokens, original tokens or None)
    uses: tuple[str, ...] | None = ()  # GEMConfig fields fn reads; None: unknown
    needs: tuple[str, ...] = ()  # what fn needs besides the backbone: "proxy" (a ProxyAttention, passed as
    #                               proxy=), "masks" (mask label maps [B, H, W], passed as masks=)
    attention: LastBlockAttention | SelfSelfAttention | None = None  # how its last block attends, for plug-ins
    #                               that rewrite that attention (gemseg.methods.attention); None: not declared

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError("fn must be callable")
        needs = (self.needs,) if isinstance(self.needs, str) else tuple(self.needs)
        unknown = [n for n in needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"needs names unknown requirement(s) {', '.join(unknown)}; choose from {', '.join(NEEDS)}")
        object.__setattr__(self, "needs", needs)
        if self.attention is not None and not isinstance(self.attention, AttentionKind):
            raise TypeError(f"attention must be one of {', '.join(k.__name__ for k in AttentionKind)} or None, "
                            f"got {type(self.attention).__name__}")
        if self.uses is not None:
            uses = tuple(self.uses)
            unknown = [u for u in uses if u not in _SETTINGS]
            if unknown:
                raise ValueError(f"uses names unknown GEM setting(s) {', '.join(unknown)}; "
                                 f"choose from {', '.join(_SETTINGS)}")
            object.__setattr__(self, "uses", uses)

    def ignored(self, config: GEMConfig) -> list[str]:
        """The settings ``config`` changes from their defaults that this method does not read."""
        if self.uses is None:
            return []
        return [f for f in _SETTINGS if f not in self.uses and getattr(config, f) != getattr(_DEFAULTS, f)]

    def __getattr__(self, attr: str):
        # other attributes are the function's (e.g. a partial's ``keywords``, or a flag the function carries)
        if attr.startswith("__") or attr in ("name", "fn", "uses", "needs", "attention"):
            raise AttributeError(attr)
        return getattr(self.fn, attr)

    def __call__(self, backbone, images, config: GEMConfig, **kwargs):
        ignored = self.ignored(config)
        if ignored:
            warnings.warn(f"method {self.name!r} ignores the GEM setting(s) {', '.join(ignored)}", stacklevel=2)
        return self.fn(backbone, images, config, **kwargs)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gem", gem_tokens, uses=_SETTINGS, attention=SelfSelfAttention()),
    Method("clip", clip_tokens, attention=LastBlockAttention(("qk",), neighbourhood=False, residual=True)),
    Method("maskclip", maskclip_tokens),
    Method("maskclip-vproj", maskclip_vproj_tokens),
    Method("vv", vv_tokens, uses=("depth",), attention=SelfSelfAttention(vv_settings)),
    Method("sclip", sclip_tokens, attention=LastBlockAttention(("qq", "kk"), neighbourhood=False, residual=True)),
    Method("clearclip", clearclip_tokens, attention=LastBlockAttention(("qq",), neighbourhood=False, residual=False)),
    Method("naclip", naclip_tokens, attention=LastBlockAttention(("kk",), neighbourhood=True, residual=False)),
    Method("proxyclip", proxyclip_tokens, needs=("proxy",)),
    Method("trident", trident_tokens, needs=("proxy",)),
    Method("corrclip", corrclip_tokens, needs=("proxy", "masks")),
    Method("sc-clip", scclip_tokens),
    Method("sfp", sfp_tokens),
    Method("cass", cass_tokens, needs=("proxy",)),
)}

# one line per built-in method, for `gemseg models --methods` (the table above in short)
SUMMARIES = {"gem": "GEM: self-self attention path in the last depth-1 blocks (GEMConfig settings)",
             "clip": "raw CLIP patch tokens", "maskclip": "MaskCLIP as released (value path, residual, MLP)",
             "maskclip-vproj": "MaskCLIP as ClearCLIP re-implements it (value path, output projection)",
             "vv": "CLIP Surgery-style value-value attention path", "sclip": "SCLIP: q-q + k-k attention",
             "clearclip": "ClearCLIP: q-q attention, no residual, no MLP",
             "naclip": "NACLIP: k-k attention + Gaussian neighbourhood, no residual, no MLP",
             "proxyclip": "ProxyCLIP: attention from a vision foundation model (--proxy)",
             "trident": "Trident: CLIP + DINO windows spliced, aggregated with SAM's encoder attention",
             "sc-clip": "SC-CLIP: anomaly-token repair, self-adjusting attention, multi-level fusion",
             "sfp": "SFP: outlier mitigation, attention enhancement, multi-layer integration",
             "resclip": "with the ResCLIP plug-in: RCS and SFR on the base's last-block attention",
             "corrclip": "CorrCLIP: attention rebuilt from class-agnostic masks and DINO (--proxy, --masks)",
             "cass": "CASS: a DINO graph distilled into the last attention, object-presence prior (--proxy)"}

# plug-ins: name -> (the capability a base must declare, a Method field; (name, that capability's value) ->
# token function of "<base>+<name>"; what the composition needs besides the base's needs). The bases of
# ResCLIP are the methods that declare their last block's attention (``sclip``, ``clearclip``, ``naclip``,
# ``clip``, ``gem``, ``vv``, and any registered with ``attention=``); the official code's bases
# (test_all.sh ARCH ATTN) are SCLIP 'w_resi sclip', ClearCLIP 'wo_resi clearclip', NACLIP 'wo_resi resclip'
# and CLIP 'w_resi vanilla'; gem and vv are ours (docs/methods.md).
PLUGINS: dict[str, tuple[str, Callable, tuple[str, ...]]] = {"resclip": ("attention", resclip_plugin, ("text", "refine"))}


def plugin_bases(plugin: str) -> list[str]:
    """The registered methods ``plugin`` composes with: those that declare its capability."""
    capability = PLUGINS[plugin][0]
    return [n for n, m in METHODS.items() if "+" not in n and getattr(m, capability) is not None]


def _compose(name: str) -> Method:
    """The registered :class:`Method` of ``"<base>+<plug-in>"``, built and registered on first use: the
    base's ``uses`` and ``needs``, and the plug-in's needs."""
    base, _, plugin = name.rpartition("+")
    if plugin not in PLUGINS:
        raise ValueError(f"unknown plug-in {plugin!r} in method {name!r}; choose from {', '.join(PLUGINS)}")
    capability, build, needs = PLUGINS[plugin]
    if base not in plugin_bases(plugin):
        raise ValueError(f"{plugin} composes with {', '.join(plugin_bases(plugin))}, not {base!r} (method {name!r}): "
                         f"a base declares its {capability} (register_method(..., {capability}=...))")
    b = METHODS[base]
    METHODS[name] = Method(name, build(name, getattr(b, capability)), uses=b.uses,
                           needs=tuple(dict.fromkeys((*b.needs, *needs))))
    return METHODS[name]


for _plugin in PLUGINS:  # every composition is registered, whatever imports first
    for _base in plugin_bases(_plugin):
        _compose(f"{_base}+{_plugin}")


def get_method(name: str) -> Method:
    """The method registered as ``name`` (callable like its function; ``.fn``, ``.uses``)."""
    if isinstance(name, str) and name not in METHODS and "+" in name:
        return _compose(name)
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def list_methods() -> list[str]:
    """Names of the registered methods, built-in first, then every ``<base>+<plug-in>`` composition."""
    composed = [f"{b}+{p}" for p in PLUGINS for b in plugin_bases(p)]
    return list(dict.fromkeys([*METHODS, *composed]))


def register_method(name: str, fn: Callable, *, uses: tuple[str, ...] | None = None,
                    needs: tuple[str, ...] = (), attention=None, overwrite: bool = False) -> None:
    """Make ``fn`` selectable as ``method=name``. It takes ``(backbone, images, config, *, return_ori)``
    and returns ``(tokens, original tokens or None)``, like :func:`gemseg.gem.gem_tokens`. ``uses``
    names the :class:`~gemseg.GEMConfig` fields it reads (``()``: none; ``None``, the default: not
    declared, so nothing is warned about or refused); ``needs`` what else it takes (:data:`NEEDS`);
    ``attention`` how its last block attends (a :class:`LastBlockAttention` or :class:`SelfSelfAttention`),
    which makes ``name+resclip`` a method too.
    Use ``functools.partial`` to register a variant, e.g. ``register_method("naclip-narrow", partial(naclip_tokens, std=3.0), uses=())``."""
    if not isinstance(name, str) or not name:
        raise TypeError("a method name must be a non-empty string")
    if not callable(fn):
        raise TypeError("fn must be callable")
    if name in METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    METHODS[name] = Method(name, fn, uses=uses, needs=needs, attention=attention)
    for composed in [n for n in METHODS if n.rpartition("+")[0] == name]:  # built from the replaced one
        del METHODS[composed]


__all__ = ["Method", "METHODS", "NEEDS", "get_method", "list_methods", "register_method", "gem_tokens", "clip_tokens",
           "maskclip_tokens", "maskclip_vproj_tokens", "vv_tokens", "sclip_tokens", "clearclip_tokens", "naclip_tokens",
           "neighbourhood_bias", "NACLIP_STD", "proxyclip_tokens", "ProxyAttention", "ProxyCLIPConfig", "PLUGINS", "SUMMARIES",
           "scclip_tokens", "SCCLIPConfig", "sfp_tokens", "SFPConfig", "resclip_tokens", "ResCLIPConfig",
           "LastBlockAttention", "SelfSelfAttention", "plugin_bases", "vv_settings", "cass_tokens", "CASSConfig", "CASSProxy",
           "corrclip_tokens", "CorrCLIPProxy", "CorrCLIPConfig"]
