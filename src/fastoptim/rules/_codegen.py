"""Functions and classes generated from the rules, with real signatures.

Like dataclasses, the source of each function is written out and compiled,
so a generated function has an ordinary signature (positional and keyword
arguments, defaults: what inspect, help() and stub generators see) and
costs no more to call than one written by hand.
"""
from ._rule import PRECISION_DEFAULTS, TORCH_ONLY_DEFAULTS, Choice, Flag, Integer, Pair, Real, Reals

# ---- annotations: of the generated functions, and of their stubs (fastoptim.rules._stubs) ----

# The types of torch.optim's keys that change nothing here (TORCH_ONLY_DEFAULTS).
TORCH_ONLY_TYPES = {"foreach": "bool | None", "capturable": "bool", "differentiable": "bool",
                    "fused": "bool | None"}
# The types of the 16-bit options (PRECISION_DEFAULTS), keyword-only in every class.
PRECISION_TYPES = {"state_dtype": "Literal['float32'] | None", "master_weights": "bool",
                   "stochastic_rounding": "bool", "seed": "int"}


def option_type(rule, name):
    """A class option's annotation (names from fastoptim.typing)."""
    if name == "lr":
        return "LR"
    option = rule.by_name.get(name)
    if option is None:
        return TORCH_ONLY_TYPES[name]
    if isinstance(option, Pair):
        return f"tuple[{', '.join(_value_type(part) for part in option.parts)}]"
    return _value_type(option)


def _value_type(option):
    if isinstance(option, Flag):
        return "bool"
    if isinstance(option, Integer):
        return "int | None" if option.allow_none else "int"
    if isinstance(option, Choice):
        return "Literal[" + ", ".join(repr(c) for c in option.choices) + "]"
    if isinstance(option, Reals):
        return "tuple[float, ...]"
    return "float | None" if isinstance(option, Real) and option.allow_none else "float"


def field_type(rule, name):
    """A kernel field's annotation in the functional forms."""
    if name == "lr":
        return "float"
    option = rule.by_name.get(name) or next((f for f in rule.fields if f.name == name), None)  # a Pair's part
    return "float" if option is None else _value_type(option)


def compile_function(name, parameters, body, namespace, doc, returns="None"):
    """def name(parameters) -> returns: body, compiled in `namespace` (which holds the defaults it names)."""
    source = f"def {name}({', '.join(parameters)}) -> {returns}:\n" + "".join(f"    {line}\n" for line in body)
    scope = dict(namespace)
    exec(compile(source, f"<fastoptim generated {name}>", "exec"), scope)
    function = scope[name]
    function.__doc__ = doc
    return function


def compile_class(name, base, adapter, parameters, defaults_expression, namespace, attributes, module, torch):
    """class name(base) whose __init__(self, params, parameters) passes defaults_expression to
    the adapter's __init__(params, defaults) (base is the adapter, or a face subclassing it)."""
    source = (f"class {name}(_Base):\n"
              f"    def __init__(self, params: {'TorchParams' if torch else 'Params'!r}, "
              f"{', '.join(parameters)}) -> None:\n"
              f"        _Adapter.__init__(self, params, {defaults_expression})\n")
    scope = dict(namespace, _Base=base, _Adapter=adapter)
    exec(compile(source, f"<fastoptim generated {name}>", "exec"), scope)
    cls = scope[name]
    for key, value in attributes.items():
        setattr(cls, key, value)
    cls.__module__ = module
    cls.__qualname__ = name
    cls.__init__.__qualname__ = f"{name}.__init__"
    return cls


# ---- functional signatures -----------------------------------------------------------

def option_defaults(rule, variant):
    """Every option's default for this face (the variant's own first)."""
    defaults = {o.name: o.default for o in rule.options}
    defaults.update(variant.defaults)
    return defaults


def field_defaults(rule, variant):
    """Every kernel field's default for this face (a Pair's default split into its parts)."""
    options = option_defaults(rule, variant)
    out = {"lr": options["lr"], "maximize": options.get("maximize", False)}
    for option in rule.options:
        if isinstance(option, Pair):
            out.update(zip([p.name for p in option.parts], options[option.name]))
        elif option.kernel:
            out[option.name] = options[option.name]
    return out


def functional_parameters(rule, variant):
    """(parameter sources, namespace of defaults) of the functional and reference forms:
    param, grad, the positional state, then keyword-only step, lr, the fields, the
    optional state, maximize and grad_scale."""
    defaults = field_defaults(rule, variant)
    namespace, parameters = {}, ["param: 'FloatArray'", "grad: 'FloatArray'"]
    for slot in rule.state:
        if slot.positional:
            parameters.append(f"{slot.arg}: 'FloatArray'" if slot.when is None and slot.ndims is None
                              else f"{slot.arg}: 'FloatArray | None' = None")
    parameters += ["*", "step: 'int'"]
    for name in ("lr",) + rule.field_names:
        if name not in variant.fixed:
            namespace[f"_default_{name}"] = defaults[name]
            parameters.append(f"{name}: {field_type(rule, name)!r} = _default_{name}")
    parameters += [f"{slot.arg}: 'FloatArray | None' = None" for slot in rule.state if not slot.positional]
    if "maximize" in rule.by_name:
        namespace["_default_maximize"] = defaults["maximize"]
        parameters.append("maximize: 'bool' = _default_maximize")
    parameters.append("grad_scale: 'float | None' = None")
    return parameters, namespace


def maximize_argument(rule):
    """Source of the maximize value in a generated body: the argument, or False for a rule without it."""
    return "maximize" if "maximize" in rule.by_name else "False"


# A closure-driven rule's functional closure: evaluates the objective, returns (loss, grads).
FUNCTIONAL_CLOSURE_TYPE = "Callable[[], tuple[float, Sequence[FloatArray | None]]]"


def closure_parameters(rule, variant):
    """(parameter sources, namespace of defaults) of a closure-driven rule's functional and
    reference forms: params, closure, state (torch's state dict, updated in place), then
    the class options, keyword-only, with the class's defaults."""
    defaults = field_defaults(rule, variant)
    namespace = {}
    parameters = ["params: 'list[FloatArray]'", f"closure: {FUNCTIONAL_CLOSURE_TYPE!r}",
                  "state: 'dict[str, Any]'", "*"]
    for name in ("lr",) + rule.field_names:
        if name not in variant.fixed:
            namespace[f"_default_{name}"] = defaults[name]
            parameters.append(f"{name}: {field_type(rule, name)!r} = _default_{name}")
    return parameters, namespace


def field_arguments(rule, variant):
    """Source of the fields' values in a generated body: the argument, or the variant's fixed value."""
    return [f"_fixed_{name}" if name in variant.fixed else name for name in rule.field_names]


def fixed_namespace(variant):
    return {f"_fixed_{name}": value for name, value in variant.fixed.items()}


# ---- class signatures -------------------------------------------------------------------

def class_parameters(rule, variant, torch):
    """(parameter sources, defaults expression, namespace) of a face's constructor."""
    options = option_defaults(rule, variant)
    namespace = fixed_namespace(variant)
    parameters, keys, keyword_only = [], [], False
    for name, kw in rule.layout(torch):
        if name in variant.fixed:
            continue
        if kw and not keyword_only:
            parameters.append("*")
            keyword_only = True
        default = TORCH_ONLY_DEFAULTS[name] if name not in rule.by_name else options[name]
        namespace[f"_default_{name}"] = default
        parameters.append(f"{name}: {option_type(rule, name)!r} = _default_{name}")
        keys.append(name)
    if not keyword_only:
        parameters.append("*")
    for name, default in PRECISION_DEFAULTS.items():  # the 16-bit options, last and keyword-only
        namespace[f"_default_{name}"] = default
        parameters.append(f"{name}: {PRECISION_TYPES[name]!r} = _default_{name}")
        keys.append(name)
    items = [f"{name!r}: {name}" for name in keys] + [f"{name!r}: _fixed_{name}" for name in variant.fixed]
    return parameters, "{" + ", ".join(items) + "}", namespace


def generate_classes(rules, base, torch, module, describe):
    """{class name: class} for every face of every rule: the rule's first face subclasses
    `base`, the others (AdamW) the first.  describe(variant) is the class docstring."""
    classes = {}
    for rule in rules:
        first = None
        for variant in rule.variants:
            parameters, defaults, namespace = class_parameters(rule, variant, torch)
            attributes = dict(rule=rule, variant=variant)
            if rule.closure:  # step(closure): the objective is evaluated inside the step
                attributes["step"] = base.closure_step
            cls = compile_class(variant.name, first or base, base, parameters, defaults, namespace,
                                attributes, module, torch)
            cls.__doc__ = describe(variant)
            classes[variant.name] = cls
            first = first or cls
    return classes


# ---- numpydoc docstrings of the generated faces ---------------------------------------------

def _range(option):
    if option.low == -float("inf") and option.high == float("inf"):
        return "any value but NaN" if option.allow_inf else "any finite value"
    low, high = ("(" if option.low_open else "[") + f"{option.low:g}", f"{option.high:g}" + (
        ")" if option.high_open else "]")
    return f">= {option.low:g}" if option.high == float("inf") and not option.low_open else f"in {low}, {high}"


def describe_option(rule, name, default):
    """(type line, description) of a parameter `name` of a generated face."""
    option = rule.by_name.get(name) or next((f for f in rule.fields if f.name == name), None)
    if name == "lr" and option is not None:
        return f"float or schedule, default {default!r}", (
            f"The learning rate, {_range(option)}; a class also takes a schedule "
            "(fastoptim.schedules, or any callable of the step).")
    if option is None:
        return f"{TORCH_ONLY_TYPES[name].replace(' | ', ' or ')}, default {default!r}", (
            "torch.optim's option; accepted and kept in the groups, changes nothing here.")
    if isinstance(option, Pair):
        parts = ", ".join(part.name for part in option.parts)
        return f"tuple of float, default {default!r}", f"({parts}), each {_range(option.parts[0])}."
    if isinstance(option, Flag):
        return f"bool, default {default!r}", "Maximize the objective." if name == "maximize" else ""
    if isinstance(option, Integer):
        bounds = [f">= {option.low}" if option.low is not None else "",
                  f"<= {option.high}" if option.high is not None else ""]
        bound = " and ".join(b for b in bounds if b)
        return (f"int{' or None' if option.allow_none else ''}, default {default!r}",
                f"The {option.label}{', ' + bound if bound else ''}.")
    if isinstance(option, Choice):
        return (f"{{{', '.join(repr(c) for c in option.choices)}}}, default {default!r}",
                f"One of {', '.join(f'``{c!r}``' for c in option.choices)}.")
    if isinstance(option, Reals):
        return f"tuple of {option.length} float, default {default!r}", f"{option.length} finite numbers."
    return f"float, default {default!r}", f"The {option.label.removesuffix(' value')}, {_range(option)}."


def numpydoc(summary, rule, parameters, example, extra=(), checked=True):
    """A numpydoc docstring: summary, Parameters ((name, type line, description), ...), Raises
    (for a checked face), Examples."""
    lines = [summary, "", "Parameters", "----------"]
    for name, type_line, description in (*extra, *parameters):
        lines.append(f"{name} : {type_line}")
        if description:
            lines.append(f"    {description}")
    if checked:
        lines += ["", "Raises", "------", "TypeError",
                  "    A hyperparameter or an array of the wrong type, named in the message.", "ValueError",
                  "    A hyperparameter out of range, or arrays that do not match (shape, dtype, contiguity,",
                  "    aliasing).  Nothing is written before every check has passed."]
    lines += ["", "Examples", "--------", *example]
    return "\n".join(lines)


def class_parameters_doc(rule, variant, torch):
    """(name, type line, description) of each constructor parameter after params."""
    options = option_defaults(rule, variant)
    out = []
    for name, _ in rule.layout(torch):
        if name not in variant.fixed:
            out.append((name, *describe_option(rule, name, options.get(name, TORCH_ONLY_DEFAULTS.get(name)))))
    return out + [(name, f"{type_line}, default {PRECISION_DEFAULTS[name]!r}", description)
                  for name, type_line, description in PRECISION_DOC]


# The 16-bit options (PRECISION_DEFAULTS): keyword-only in every class, per param group.
PRECISION_DOC = (
    ("state_dtype", "{'float32'} or None", "16-bit params: None keeps the state in the param's dtype "
     "(torch's fused kernels), 'float32' keeps it in float32."),
    ("master_weights", "bool", "16-bit params: keep a float32 copy of each param in its state "
     "('master_param'), apply the update to it and store it rounded to nearest in the param."),
    ("stochastic_rounding", "bool", "16-bit params: round each updated param stochastically (unbiased), "
     "not to nearest; not with master_weights."),
    ("seed", "int", "The key, in [0, 2**64), of stochastic rounding's random bits (Philox, with the "
     "step, the param's index and the element's)."))


def functional_parameters_doc(rule, variant):
    """(name, type line, description) of each functional parameter after param and grad, in
    functional_parameters' order."""
    defaults = field_defaults(rule, variant)

    def state(slot):
        needed = f" Needed when {slot.reason}." if slot.when is not None else ""
        if slot.ndims is not None:
            needed += f" Needed when {slot.ndim_reason}, else None."
        if slot.reduced is not None:
            needed += f" Shaped like param with dimension {slot.reduced} of size 1."
        if isinstance(slot.fill, str):
            start = f"starts at the option {slot.fill}"
        else:
            start = "zeros before the first step" if slot.fill is None else f"starts at {slot.fill}"
        if slot.scalar:
            start = f"a 0-d float32 array, {start}"
        return (slot.arg, "ndarray" + (" or None" if slot.when is not None or slot.ndims is not None else ""),
                f"State, updated in place ({start}).{needed}")

    out = [state(slot) for slot in rule.state if slot.positional]
    out.append(("step", "int", "The step, 1 for the first update."))
    for name in ("lr",) + rule.field_names:
        if name not in variant.fixed:
            type_line, description = describe_option(rule, name, defaults[name])
            out.append((name, type_line.replace("float or schedule", "float"),
                        description.split(";")[0] + "." if name == "lr" else description))
    out += [state(slot) for slot in rule.state if not slot.positional]
    if "maximize" in rule.by_name:
        out.append(("maximize", *describe_option(rule, "maximize", defaults["maximize"])))
    out.append(("grad_scale", "float or None, default None", "Divides the grad inside the kernel (None: 1)."))
    return out


def closure_parameters_doc(rule, variant):
    """(name, type line, description) of each closure form parameter after params, closure and
    state, in closure_parameters' order."""
    defaults = field_defaults(rule, variant)
    out = []
    for name in ("lr",) + rule.field_names:
        if name not in variant.fixed:
            type_line, description = describe_option(rule, name, defaults[name])
            out.append((name, type_line.replace("float or schedule", "float"),
                        description.split(";")[0] + "." if name == "lr" else description))
    return out


def closure_example(module_name, variant):
    """A doctest: one step on sum(w**2) moves w towards 0."""
    module = module_name.rsplit('.', 1)[-1]
    return [">>> import numpy as np", f">>> from fastoptim import {module}", ">>> w = [np.ones(4)]",
            ">>> def closure():", "...     return float((w[0] ** 2).sum()), [2 * w[0]]",
            f">>> loss = {module}.{variant.function}(w, closure, {{}})", ">>> bool((abs(w[0]) < 1).all())", "True"]


CLOSURE_DOC = (("params", "list of ndarray", "C-contiguous float32 or float64 arrays, updated in place."),
               ("closure", "callable", "closure() evaluates the objective at the params' current values and "
                "returns (loss, grads), grads a list like params (None counts as zeros)."),
               ("state", "dict", "The optimizer's state dict (empty before the first step), updated in place."))


ARRAYS_DOC = (("param", "ndarray", "C-contiguous float32 or float64 array (float16 or bfloat16 for a rule that "
               "takes 16-bit params), updated in place."),
              ("grad", "ndarray", "Its gradient: same shape and dtype."))


def _start(rule, variant, slot):
    """Source of a scalar slot's start value in an example: its fill (an option's default, or a number)."""
    fill = slot.fill if slot.fill is not None else 0.0
    return repr(option_defaults(rule, variant)[fill] if isinstance(fill, str) else fill)


def array_example(module_name, rule, variant):
    """A doctest: one step from the starting state moves a 2x2 param (Muon's are matrices) down a
    positive gradient."""
    module = module_name.rsplit('.', 1)[-1]
    required = [slot for slot in rule.state if slot.positional and slot.when is None and slot.serves(2)]
    lines = [">>> import numpy as np", f">>> from fastoptim import {module}",
             ">>> w, g = np.ones((2, 2), np.float32), np.ones((2, 2), np.float32)"]
    if required:
        starts = [f"np.array({_start(rule, variant, s)}, np.float32)" if s.scalar
                  else f"np.zeros({s.shape((2, 2))}, np.float32)" if s.reduced is not None else "np.zeros_like(w)"
                  for s in required]
        lines.append(f">>> {', '.join(s.arg for s in required)} = {', '.join(starts)}")
    lines += [f">>> {module}.{variant.function}(w, g, {''.join(s.arg + ', ' for s in required)}step=1)",
              ">>> bool((w < 1).all())", "True"]
    return lines
