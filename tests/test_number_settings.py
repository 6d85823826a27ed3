"""The number settings of the proxy methods and LPOSS are checked by one helper (gemseg.config.as_floats):
a bool or a string is refused naming the method and the field, an int is stored as a float."""
from __future__ import annotations

import pytest

from gemseg.lposs import LPOSSConfig
from gemseg.methods import CASSConfig, ProxyCLIPConfig
from gemseg.methods.corrclip import CorrCLIPConfig
from gemseg.methods.trident import TridentConfig


@pytest.mark.parametrize("kind, label, field", [(ProxyCLIPConfig, "ProxyCLIP", "beta"),
                                                (CorrCLIPConfig, "CorrCLIP", "tau"),
                                                (CASSConfig, "CASS", "scale_factor"),
                                                (TridentConfig, "Trident", "cos_fac"),
                                                (LPOSSConfig, "LPOSS", "sigma")])
def test_a_number_setting_refuses_other_types_and_stores_a_float(kind, label, field):
    for bad in (True, "1.0"):
        with pytest.raises(TypeError, match=rf"^{label} {field} must be a number, got {bad!r}$"):
            kind(**{field: bad})
    value = getattr(kind(**{field: 1}), field)
    assert value == 1.0 and type(value) is float
