"""What the graph of a model made elsewhere may run: TorchScript and ONNX checked against an
allowlist before a single operator runs.

A TorchScript file is a program: its methods can call any operator PyTorch has, among them
``aten::from_file`` (read any file into a tensor, or map it shared and write it), ``aten::save``
and the operators of any library loaded into the process, and ``torch.jit.load`` itself runs a
``__setstate__`` method it defines. dlhisto therefore reads the archive's code before loading it
(a ``__setstate__`` is refused), then inlines every method of every submodule and refuses any
operator outside :data:`TORCHSCRIPT_ATEN` and :data:`TORCHSCRIPT_PRIM`: tensor arithmetic,
shapes, layers, control flow. ONNX graphs may use the standard operator sets only
(:data:`ONNX_DOMAINS`) and keep every tensor inside the file (no external data, which names
other files). Each refusal is one line naming the operator.

This is the first wall; the second is that the ``dlhisto`` command runs the step confined
(:mod:`confine`): even an operator that slipped through could read or write nothing but the
step's own inputs and outputs.
"""

from __future__ import annotations

import io
import re
import zipfile

from ..base.errors import InputError

TORCHSCRIPT_ATEN = frozenset("""
    abs absolute acos acosh adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d
    adaptive_max_pool2d adaptive_max_pool3d add addcdiv addcmul addmm addmv alias all allclose amax amin aminmax
    angle any arange argmax argmin asin asinh atan atan2 atanh avg_pool1d avg_pool2d avg_pool3d baddbmm
    batch_norm bernoulli bitwise_and bitwise_not bitwise_or bitwise_xor bmm broadcast_tensors broadcast_to bucketize
    cat ceil celu channel_shuffle chunk clamp clamp_max clamp_min clip clone constant_pad_nd contiguous conv1d conv2d
    conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution copy copy_ cos cosh cosine_similarity cross
    cumprod cumsum deg2rad detach diag diagonal diff dim div divide dot dropout einsum elu embedding
    eq equal erf erfc erfinv exp exp2 expand expand_as expm1 eye feature_dropout fill flatten
    flip fliplr flipud float_power floor floor_divide fmax fmin fmod frac full full_like gather ge gelu glu
    grid_sampler grid_sampler_2d group_norm gt hardshrink hardsigmoid hardswish hardtanh
    hstack hypot index index_add index_copy index_fill index_put index_select instance_norm
    is_contiguous is_floating_point isfinite isinf isnan item layer_norm le leaky_relu lerp lgamma linear
    linspace log log10 log1p log2 log_sigmoid log_softmax logaddexp logical_and logical_not logical_or logical_xor
    logit logsumexp lt masked_fill masked_select matmul max max_pool1d max_pool1d_with_indices
    max_pool2d max_pool2d_with_indices max_pool3d max_pool3d_with_indices max_unpool2d maximum mean median meshgrid
    min minimum mish mm movedim mul multiply mv nan_to_num narrow ne neg negative new_full new_ones
    new_zeros nonzero norm normal numel ones ones_like pad permute pixel_shuffle pixel_unshuffle pow prelu prod
    quantile rad2deg rand rand_like randint randn randn_like reciprocal reflection_pad1d reflection_pad2d
    reflection_pad3d relu relu6 remainder repeat repeat_interleave replication_pad1d replication_pad2d
    replication_pad3d reshape reshape_as roll rot90 round rrelu rsqrt rsub scalar_tensor scaled_dot_product_attention
    scatter scatter_add select selu sigmoid sign silu sin sinh size slice smooth_l1_loss softmax
    softplus softshrink sort split split_with_sizes sqrt square squeeze stack std sub subtract sum t tan tanh
    tensor tensor_split threshold tile to topk transpose tril triu true_divide trunc type_as unbind unflatten unfold
    unsqueeze upsample_bicubic2d upsample_bilinear2d upsample_linear1d upsample_nearest1d upsample_nearest2d
    upsample_nearest3d upsample_trilinear3d var view view_as where zero zeros zeros_like
    __and__ __contains__ __getitem__ __is__ __isnot__ __not__ __or__ __range_length __derive_index __round_to_zero_floordiv
    __xor__ _set_item append len list extend insert pop clear keys values items floordiv ceil floor sqrt dict
    Bool Float Int ScalarImplicit str format warn
    _convolution _convolution_mode _adaptive_avg_pool2d _adaptive_avg_pool3d _softmax _log_softmax _to_copy
    _unsafe_view _reshape_alias _pad_enum _pad_circular _shape_as_tensor _dim_arange native_batch_norm
    native_layer_norm native_group_norm native_dropout _native_batch_norm_legit_no_training _upsample_bilinear2d_aa
    _upsample_bicubic2d_aa _upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d
    _cast_Float _cast_Half _cast_Double _cast_Long _cast_Int _cast_Byte _cast_Bool
    """.split())
"""ATen operators (any overload) a foreign TorchScript module may call: arithmetic, comparisons,
reductions, shapes and views, layers (convolution, pooling, normalisation, activations,
attention, resampling), creation of new tensors, and the list, dict and number operators of
TorchScript's own code; each one's in-place form (``relu_``) too. No operator that reads or writes files (``from_file``, ``save``),
storage (``set_``), memory by offset (``as_strided``) or left uninitialised (``empty``),
devices, threads or other processes."""
TORCHSCRIPT_PRIM = frozenset("""
    BroadcastSizes ConstantChunk Constant DictConstruct DictIndex EnumName EnumValue GetAttr If ListConstruct
    ListUnpack ListIndex Loop NumToTensor RaiseException SetAttr TupleConstruct TupleIndex TupleSlice TupleUnpack Uninitialized
    abs device dtype isinstance layout max min unchecked_cast is_cuda requires_grad shape data
    """.split())
"""TorchScript's own instructions: constants, attributes, control flow, containers, exceptions.
Not ``PythonOp`` (Python code) nor calls left after inlining (code that could not be read)."""
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""The operator sets of the ONNX standard; another domain means a runtime's custom library."""
_SETSTATE = re.compile(rb"\bdef\s+__setstate__\b")
_RESAMPLING = re.compile(r"^_?upsample_[a-z0-9]+(_aa)?$")
"""Every resampling mode of ``interpolate`` (a scripted call lists them all)."""


def check_torchscript_archive(data: bytes, name: str) -> None:
    """Refuse a TorchScript archive whose code defines ``__setstate__`` (torch.jit.load would run it)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            code = [member for member in archive.namelist() if "/code/" in member and member.endswith(".py")]
            for member in code:
                if _SETSTATE.search(archive.read(member)):
                    raise InputError(f"'{name}': its TorchScript code defines __setstate__, which would run as it "
                                     "loads; dlhisto does not run it")
    except zipfile.BadZipFile:
        raise InputError(f"'{name}': its TorchScript weights are not a TorchScript archive") from None


def check_torchscript(module, name: str) -> None:
    """Refuse a loaded TorchScript module any of whose methods (in any submodule, with the
    functions they call inlined) uses an operator outside the allowlist, naming the first."""
    import torch

    for module_name, submodule in module.named_modules():
        script = submodule._c
        for method_name in script._method_names():
            graph = script._get_method(method_name).graph.copy()
            torch._C._jit_pass_inline(graph)
            for kind in _node_kinds(graph.block()):
                namespace, _, operator = kind.partition("::")
                if not ((namespace == "aten" and _allowed_aten(operator))
                        or (namespace == "prim" and operator in TORCHSCRIPT_PRIM)):
                    where = f"{module_name + '.' if module_name else ''}{method_name}"
                    raise InputError(f"'{name}': its TorchScript code calls {kind} (in {where}), which dlhisto does "
                                     "not run: a foreign model may use tensor operators only")


def check_onnx(data: bytes, name: str) -> None:
    """Refuse an ONNX model with an operator outside :data:`ONNX_DOMAINS` (in any graph,
    subgraph or function) or a tensor stored outside the file."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)  # parses the bytes only: external data is never read
    except Exception:  # noqa: BLE001 - protobuf raises its own kinds
        raise InputError(f"'{name}': its ONNX weights are not an ONNX model") from None
    functions = {(function.domain, function.name) for function in model.functions}
    for opset in model.opset_import:
        if opset.domain not in ONNX_DOMAINS | {domain for domain, _ in functions}:
            raise InputError(f"'{name}': its ONNX model imports the operator set '{opset.domain[:80]}', which "
                             "dlhisto does not run: a foreign model may use the standard ONNX operators only")
    graphs = [model.graph] + [function for function in model.functions]
    while graphs:
        graph = graphs.pop()
        for tensor in getattr(graph, "initializer", []):
            if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
                raise InputError(f"'{name}': its ONNX tensor '{tensor.name[:80]}' is stored in another file; "
                                 "dlhisto runs ONNX models that hold all their weights")
        for node in graph.node:
            if node.domain not in ONNX_DOMAINS and (node.domain, node.op_type) not in functions:
                raise InputError(f"'{name}': its ONNX model calls {node.domain[:80]}::{node.op_type[:80]}, which "
                                 "dlhisto does not run: a foreign model may use the standard ONNX operators only")
            for attribute in node.attribute:
                graphs += ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)


def _allowed_aten(operator: str) -> bool:
    """An operator of the allowlist, or the in-place form of one (``add_`` of ``add``)."""
    in_place = operator.endswith("_") and not operator.endswith("__")
    return (operator in TORCHSCRIPT_ATEN or (in_place and operator[:-1] in TORCHSCRIPT_ATEN)
            or _RESAMPLING.match(operator) is not None)


def _node_kinds(block):
    for node in block.nodes():
        yield node.kind()
        for inner in node.blocks():
            yield from _node_kinds(inner)
