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

pub fn judge(module: &str, name: &str) -> Verdict {
    // Python 2 spelling of builtins.
    let module = if module == "__builtin__" { "builtins" } else { module };
    let full = format!("{module}.{name}");
    if let Some((_, why)) = DANGEROUS_NAMES.iter().find(|(n, _)| *n == full) {
        return Verdict::Dangerous(why);
    }
    for (m, why) in DANGEROUS_MODULES {
        if module == *m || module.strip_prefix(m).is_some_and(|rest| rest.starts_with('.')) {
            return Verdict::Dangerous(why);
        }
    }
    // A dotted name can reach an attribute of an attribute (`os.path` via
    // `name = "path.join"` under protocol 4); judge what it resolves to.
    if name.contains('.') {
        let (head, tail) = name.rsplit_once('.').unwrap_or((name, ""));
        return match judge(&format!("{module}.{head}"), tail) {
            Verdict::Safe => Verdict::Unknown,
            other => other,
        };
    }
    if SAFE.contains(&full.as_str()) || (module == "torch" && TORCH_DTYPES.contains(&name)) {
        return Verdict::Safe;
    }
    // scikit-learn estimators are classes (CamelCase); its functions are not
    // on the list (some fetch data over the network).
    if (module == "sklearn" || module.starts_with("sklearn."))
        && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
    {
        return Verdict::Safe;
    }
    if module.starts_with("scipy.sparse") && (name.ends_with("_matrix") || name.ends_with("_array")) {
        return Verdict::Safe;
    }
    Verdict::Unknown
}
