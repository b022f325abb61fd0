"""Functions and classes generated from the rules, with real signatures.

Like dataclasses, the source of each function is written out and compiled,
so a generated function has an ordinary signature (positional and keyword
arguments, defaults: what inspect, help() and stub generators see) and
costs no more to call than one written by hand.
"""
from ._rule import TORCH_ONLY_DEFAULTS, Pair


def compile_function(name, parameters, body, namespace, doc):
    """def name(parameters): body, compiled in `namespace` (which holds the defaults it names)."""
    source = f"def {name}({', '.join(parameters)}):\n" + "".join(f"    {line}\n" for line in body)
    scope = dict(namespace)
    exec(compile(source, f"<fastoptim generated {name}>", "exec"), scope)
    function = scope[name]
    function.__doc__ = doc
    return function


def compile_class(name, base, adapter, parameters, defaults_expression, namespace, attributes, module):
    """class name(base) whose __init__(self, params, parameters) passes defaults_expression to
    the adapter's __init__(params, defaults) (base is the adapter, or a face subclassing it)."""
    source = (f"class {name}(_Base):\n"
              f"    def __init__(self, params, {', '.join(parameters)}):\n"
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
    namespace, parameters = {}, ["param", "grad"]
    for slot in rule.state:
        if slot.positional:
            parameters.append(slot.arg if slot.when is None else f"{slot.arg}=None")
    parameters += ["*", "step"]
    for name in ("lr",) + rule.field_names:
        if name not in variant.fixed:
            namespace[f"_default_{name}"] = defaults[name]
            parameters.append(f"{name}=_default_{name}")
    parameters += [f"{slot.arg}=None" for slot in rule.state if not slot.positional]
    if "maximize" in rule.by_name:
        namespace["_default_maximize"] = defaults["maximize"]
        parameters.append("maximize=_default_maximize")
    parameters.append("grad_scale=None")
    return parameters, namespace


def maximize_argument(rule):
    """Source of the maximize value in a generated body: the argument, or False for a rule without it."""
    return "maximize" if "maximize" in rule.by_name else "False"


def closure_parameters(rule, variant):
    """(parameter sources, namespace of defaults) of a closure-driven rule's functional and
    reference forms: params, closure, state (torch's state dict, updated in place), then
    the class options, keyword-only, with the class's defaults."""
    defaults = field_defaults(rule, variant)
    namespace, parameters = {}, ["params", "closure", "state", "*"]
    for name in ("lr",) + rule.field_names:
        if name not in variant.fixed:
            namespace[f"_default_{name}"] = defaults[name]
            parameters.append(f"{name}=_default_{name}")
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
        parameters.append(f"{name}=_default_{name}")
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
                                attributes, module)
            cls.__doc__ = describe(variant)
            classes[variant.name] = cls
            first = first or cls
    return classes
