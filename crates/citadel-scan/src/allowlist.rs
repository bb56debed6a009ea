//! Which imported globals a model pickle may name.
//!
//! Three answers: known safe (tensor and array rebuild functions, plain
//! containers), known dangerous (code execution, file or network access,
//! dynamic imports, nested deserialization) and unknown. Unknown is a warning,
//! not a pass: the list is deliberately short, and a user who trusts a
//! library extends it in policy, not by silence here.

pub enum Verdict {
    Safe,
    Dangerous(&'static str),
    Unknown,
}

/// Exact `module.name` pairs known to be safe to import in a model file.
const SAFE: &[&str] = &[
    // Python containers and scalars.
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.deque",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.range",
    "builtins.complex",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.str",
    "builtins.object",
    "builtins.long",
    "builtins.xrange",
    "builtins.unicode",
    "__builtin__.set",
    "__builtin__.frozenset",
    "__builtin__.complex",
    "__builtin__.object",
    "copyreg._reconstructor",
    "copy_reg._reconstructor",
    "_codecs.encode",
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "datetime.tzinfo",
    "zoneinfo.ZoneInfo",
    "zoneinfo.ZoneInfo._unpickle",
    "collections.Counter",
    "collections.ChainMap",
    "fractions.Fraction",
    "ipaddress.IPv4Address",
    "ipaddress.IPv6Address",
    "decimal.Decimal",
    "uuid.UUID",
    // NumPy arrays, dtypes and scalars.
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64",
    "numpy.random._pcg64.PCG64DXSM",
    "numpy.random._philox.Philox",
    "numpy.random._sfc64.SFC64",
    "numpy.random.bit_generator.SeedSequence",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    "numpy.random._generator.Generator",
    "numpy.random.mtrand.RandomState",
    "numpy.ma.core._mareconstruct",
    "numpy.ma.core.MaskedArray",
    "numpy.ma.MaskedArray",
    "numpy.matrix",
    "numpy.rec.recarray",
    "numpy.recarray",
    "numpy.record",
    "numpy._core.records.recarray",
    "numpy._core.records.record",
    "numpy.core.records.recarray",
    "numpy.core.records.record",
    "numpy._core._internal._convert_to_stringdtype_kwargs",
    "numpy.matrixlib.defmatrix.matrix",
    "numpy.core._ufunc_reconstruct",
    "numpy._core._ufunc_reconstruct",
    // pandas containers and their unpicklers.
    "pandas.core.indexes.base._new_Index",
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    "pandas._libs.internals._unpickle_block",
    "pandas._libs.tslibs.timestamps._unpickle_timestamp",
    "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
    "pandas._libs.tslibs.nattype.__nat_unpickle",
    "pandas.core.arrays.categorical._unpickle",
    "pandas._libs.missing.NA",
    "pandas.NA",
    "pandas.NaT",
    // Gradient-boosting libraries' scikit-learn wrappers (the booster restores from its own model bytes).
    "xgboost.core.Booster",
    "lightgbm.basic.Booster",
    // scikit-learn's Cython helpers: allocate an instance of the class they are given.
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
    "sklearn.metrics._dist_metrics.newObj",
    // PyTorch tensor rebuilds.
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Size",
    "torch.device",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    // joblib's array wrappers.
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "joblib.numpy_pickle_compat.NDArrayWrapper",
];

/// torch dtypes are pickled as attributes of the `torch` module.
const TORCH_DTYPES: &[&str] = &[
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "half",
    "float",
    "double",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
    "complex64",
    "complex128",
    "long",
    "int",
    "short",
];

/// Whole modules (and their submodules) that give code execution, process,
/// file or network access, or a second deserializer.
const DANGEROUS_MODULES: &[(&str, &str)] = &[
    ("os", "process and file system access"),
    ("posix", "process and file system access"),
    ("nt", "process and file system access"),
    ("subprocess", "runs programs"),
    ("pty", "runs programs"),
    ("commands", "runs programs"),
    ("popen2", "runs programs"),
    ("sys", "interpreter internals"),
    ("runpy", "runs Python code"),
    ("code", "runs Python code"),
    ("codeop", "compiles Python code"),
    ("importlib", "dynamic import"),
    ("imp", "dynamic import"),
    ("pip", "installs packages"),
    ("setuptools", "runs build code"),
    ("socket", "network access"),
    ("ssl", "network access"),
    ("http", "network access"),
    ("urllib", "network access"),
    ("urllib2", "network access"),
    ("requests", "network access"),
    ("httplib", "network access"),
    ("ftplib", "network access"),
    ("smtplib", "network access"),
    ("telnetlib", "network access"),
    ("webbrowser", "opens programs and URLs"),
    ("shutil", "file system access"),
    ("tempfile", "file system access"),
    ("pathlib", "file system access"),
    ("glob", "file system access"),
    ("io", "file access"),
    ("_io", "file access"),
    ("fileinput", "file access"),
    ("ctypes", "native code execution"),
    ("_ctypes", "native code execution"),
    ("cffi", "native code execution"),
    ("multiprocessing", "runs processes"),
    ("asyncio", "runs processes and network access"),
    ("threading", "runs code in threads"),
    ("signal", "process control"),
    ("pickle", "a nested pickle load"),
    ("_pickle", "a nested pickle load"),
    ("cPickle", "a nested pickle load"),
    ("marshal", "loads code objects"),
    ("dill", "loads code objects"),
    ("cloudpickle", "loads code objects"),
    ("shelve", "a nested pickle load"),
    ("types", "builds functions and code objects"),
    ("operator", "attribute and method-call gadgets"),
    ("functools", "call gadgets"),
    ("inspect", "interpreter internals"),
    ("gc", "interpreter internals"),
    ("bdb", "runs Python code"),
    ("pdb", "runs Python code"),
    ("timeit", "runs Python code"),
    ("trace", "runs Python code"),
    ("profile", "runs Python code"),
    ("cProfile", "runs Python code"),
    ("doctest", "runs Python code"),
    ("venv", "runs programs"),
    ("zipimport", "dynamic import"),
    ("pydoc", "dynamic import"),
    ("torch.hub", "downloads and runs code"),
    ("torch.serialization", "a nested torch.load"),
];

/// Single callables that are dangerous wherever the rest of their module is not.
const DANGEROUS_NAMES: &[(&str, &str)] = &[
    ("builtins.eval", "evaluates Python code"),
    ("builtins.exec", "executes Python code"),
    ("builtins.compile", "compiles Python code"),
    ("builtins.open", "opens files"),
    ("builtins.__import__", "dynamic import"),
    ("builtins.getattr", "reaches any attribute, a universal gadget"),
    ("builtins.setattr", "modifies objects"),
    ("builtins.delattr", "modifies objects"),
    ("builtins.globals", "interpreter internals"),
    ("builtins.locals", "interpreter internals"),
    ("builtins.vars", "interpreter internals"),
    ("builtins.input", "reads the terminal"),
    ("builtins.breakpoint", "starts a debugger"),
    ("builtins.help", "starts a pager"),
    ("builtins.exit", "ends the process"),
    ("builtins.quit", "ends the process"),
    ("builtins.memoryview", "raw memory access"),
    ("torch.load", "a nested torch.load"),
    ("torch.storage._load_from_bytes", "a nested torch.load"),
    ("numpy.load", "a nested load that may unpickle"),
    ("numpy.lib.npyio.load", "a nested load that may unpickle"),
    ("numpy.testing._private.utils.runstring", "executes Python code"),
    ("joblib.load", "a nested joblib load"),
    ("keras.models.load_model", "a nested model load"),
];

/// numpy scalar types and ufuncs that model pickles reference (ufuncs arrive
/// through `_ufunc_reconstruct("numpy", NAME)`, which the walker resolves).
const NUMPY_NAMES: &[&str] = &[
    "bool_",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
    "clongdouble",
    "str_",
    "bytes_",
    "datetime64",
    "timedelta64",
    "void",
    "intc",
    "uintc",
    "longlong",
    "ulonglong",
    "half",
    "single",
    "double",
    "ndarray",
    "dtype",
    // ufuncs (pure arithmetic)
    "log",
    "log1p",
    "log2",
    "log10",
    "exp",
    "expm1",
    "exp2",
    "sqrt",
    "cbrt",
    "square",
    "abs",
    "absolute",
    "fabs",
    "sign",
    "negative",
    "positive",
    "reciprocal",
    "sin",
    "cos",
    "tan",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "arcsinh",
    "arccosh",
    "arctanh",
    "floor",
    "ceil",
    "trunc",
    "rint",
    "add",
    "subtract",
    "multiply",
    "divide",
    "true_divide",
    "floor_divide",
    "power",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "clip",
    "isnan",
    "isinf",
    "isfinite",
    "logical_and",
    "logical_or",
    "logical_not",
    "greater",
    "less",
    "equal",
    "not_equal",
    "deg2rad",
    "rad2deg",
];

/// pandas classes a pickle may construct (I/O classes such as `HDFStore`,
/// `ExcelWriter` or parsers are deliberately absent).
const PANDAS_TOP: &[&str] = &[
    "DataFrame",
    "Series",
    "Index",
    "RangeIndex",
    "MultiIndex",
    "CategoricalIndex",
    "DatetimeIndex",
    "TimedeltaIndex",
    "PeriodIndex",
    "IntervalIndex",
    "Categorical",
    "CategoricalDtype",
    "DatetimeTZDtype",
    "PeriodDtype",
    "IntervalDtype",
    "SparseDtype",
    "StringDtype",
    "BooleanDtype",
    "Int8Dtype",
    "Int16Dtype",
    "Int32Dtype",
    "Int64Dtype",
    "UInt8Dtype",
    "UInt16Dtype",
    "UInt32Dtype",
    "UInt64Dtype",
    "Float32Dtype",
    "Float64Dtype",
    "ArrowDtype",
    "Timestamp",
    "Timedelta",
    "Period",
    "Interval",
    "DateOffset",
    "Flags",
];

fn camel(name: &str) -> bool {
    let n = name.trim_start_matches('_');
    n.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && !n.contains('.')
}

fn under(module: &str, root: &str) -> bool {
    module == root || module.strip_prefix(root).is_some_and(|r| r.starts_with('.'))
}

pub fn judge(module: &str, name: &str) -> Verdict {
    // Python 2 spelling of builtins.
    let module = if module == "__builtin__" { "builtins" } else { module };
    let full = format!("{module}.{name}");
    if let Some((_, why)) = DANGEROUS_NAMES.iter().find(|(n, _)| *n == full) {
        return Verdict::Dangerous(why);
    }
    for (m, why) in DANGEROUS_MODULES {
        if under(module, m) {
            return Verdict::Dangerous(why);
        }
    }
    // A dotted name walks attributes at load time (`"path.os.system"` under
    // protocol 4): through a dunder or a dangerous module's name it reaches
    // anything; otherwise it is judged by what it resolves to, and unknown
    // resolutions are not judged safe.
    if name.contains('.') {
        if SAFE.contains(&full.as_str()) {
            return Verdict::Safe;
        }
        for part in name.split('.') {
            if part.starts_with("__") && part.ends_with("__") {
                return Verdict::Dangerous("a dotted name through a dunder attribute reaches interpreter internals");
            }
            if DANGEROUS_MODULES.iter().any(|(m, _)| *m == part) || part == "builtins" {
                return Verdict::Dangerous("a dotted name reaches a dangerous module through an attribute");
            }
        }
        let (head, tail) = name.rsplit_once('.').unwrap_or((name, ""));
        return match judge(&format!("{module}.{head}"), tail) {
            Verdict::Safe => Verdict::Unknown,
            other => other,
        };
    }
    if SAFE.contains(&full.as_str()) || (module == "torch" && TORCH_DTYPES.contains(&name)) {
        return Verdict::Safe;
    }
    if module == "numpy" && NUMPY_NAMES.contains(&name) {
        return Verdict::Safe;
    }
    // scikit-learn estimators are classes (CamelCase, public or private) whose
    // constructors only store parameters; its functions are not on the list
    // (some fetch data over the network). Cython unpicklers restore state.
    if under(module, "sklearn") && (camel(name) || name.starts_with("__pyx_unpickle_")) {
        return Verdict::Safe;
    }
    if module == "pandas" && PANDAS_TOP.contains(&name) {
        return Verdict::Safe;
    }
    if (under(module, "pandas.core") || under(module, "pandas.arrays") || under(module, "pandas._libs"))
        && !under(module, "pandas.core.computation")
        && (camel(name) || name.starts_with("__pyx_unpickle_"))
    {
        return Verdict::Safe;
    }
    if (module == "xgboost.sklearn" || module == "lightgbm.sklearn") && camel(name) {
        return Verdict::Safe;
    }
    if module.starts_with("scipy.sparse") && (name.ends_with("_matrix") || name.ends_with("_array")) {
        return Verdict::Safe;
    }
    if under(module, "numpy.dtypes") && camel(name) {
        return Verdict::Safe;
    }
    Verdict::Unknown
}
