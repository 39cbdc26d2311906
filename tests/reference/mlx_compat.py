"""Imported by the reference scripts before mlx_lm: mlx-lm 0.32.2's quantized MoE
layers pass global_scale= to mx.gather_qmm, which libmlx 0.32.2 lacks; the
wrapper drops the argument when it is None."""
import mlx.core as mx

_gather_qmm = mx.gather_qmm


def _gather_qmm_compat(*args, global_scale=None, **kwargs):
    if global_scale is not None:
        kwargs["global_scale"] = global_scale
    return _gather_qmm(*args, **kwargs)


mx.gather_qmm = _gather_qmm_compat
