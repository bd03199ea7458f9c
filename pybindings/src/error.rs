//! The one mapping from `shmplane::Error` to Python exceptions.
//!
//! The exception classes are defined in Python (`shmplane/errors.py`) because several
//! derive from two bases (e.g. `Timeout(ShmplaneError, TimeoutError)`), which pyo3's
//! `create_exception!` cannot express. They are looked up once and cached.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use shmplane::Error;

fn class<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyType>>, name: &str) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "shmplane.errors", name)
}

macro_rules! exc {
    ($py:expr, $name:literal) => {{
        static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        class($py, &CELL, $name)
    }};
}

/// Convert a shmplane error into the matching Python exception instance.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let cls = match &e {
        Error::NotFound { .. } => exc!(py, "NotFoundError"),
        Error::AlreadyExists { .. } => exc!(py, "AlreadyExistsError"),
        Error::InvalidName { .. } => exc!(py, "InvalidNameError"),
        Error::InvalidArgument(_) => exc!(py, "InvalidArgumentError"),
        Error::Corrupt { .. } => exc!(py, "CorruptSegmentError"),
        Error::Incompatible { .. } => exc!(py, "IncompatibleSegmentError"),
        Error::WrongKind { .. } => exc!(py, "WrongKindError"),
        Error::TooLarge { .. } => exc!(py, "MessageTooLargeError"),
        Error::Full => exc!(py, "Full"),
        Error::Empty => exc!(py, "Empty"),
        Error::Timeout => exc!(py, "Timeout"),
        Error::PeerDead { .. } => exc!(py, "PeerDeadError"),
        Error::Disconnected { .. } => exc!(py, "DisconnectedError"),
        Error::RoleTaken { .. } | Error::TooManyCopies { .. } | Error::AllTaken { .. } => exc!(py, "RoleTakenError"),
        Error::Closed => exc!(py, "ClosedError"),
        Error::Truncated { .. } => exc!(py, "TruncatedMessageError"),
        Error::NoSpace { .. } => exc!(py, "NoSpaceError"),
        Error::Lagged { missed } => {
            return match exc!(py, "LaggedError") {
                Ok(cls) => PyErr::from_type(cls.clone(), (msg, *missed)),
                Err(e) => e,
            };
        }
        Error::Remote { kind, message, traceback } => {
            return match exc!(py, "RemoteError") {
                Ok(cls) => PyErr::from_type(cls.clone(), (msg, kind.clone(), message.clone(), traceback.clone())),
                Err(e) => e,
            };
        }
        Error::NotOurs { .. } => {
            return match exc!(py, "PermissionDeniedError") {
                Ok(cls) => PyErr::from_type(cls.clone(), (libc_eacces(), msg)),
                Err(e) => e,
            };
        }
        Error::Os { source, .. } if matches!(source.kind(), std::io::ErrorKind::PermissionDenied) => {
            let errno = source.raw_os_error().unwrap_or(0);
            return match exc!(py, "PermissionDeniedError") {
                Ok(cls) => PyErr::from_type(cls.clone(), (errno, msg)),
                Err(e) => e,
            };
        }
        Error::Os { source, .. } => {
            let errno = source.raw_os_error().unwrap_or(0);
            return match exc!(py, "ShmplaneOSError") {
                Ok(cls) => PyErr::from_type(cls.clone(), (errno, msg)),
                Err(e) => e,
            };
        }
        _ => exc!(py, "ShmplaneError"),
    };
    match cls {
        Ok(cls) => PyErr::from_type(cls.clone(), msg),
        Err(import_error) => import_error,
    }
}

/// Exception class `name` of `shmplane.errors`.
///
/// # Errors
/// The import fails, or `name` is not a class there.
pub fn exception_type<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py.import("shmplane.errors")?.getattr(name)?.cast_into::<PyType>()?)
}

/// An instance of exception class `name` of `shmplane.errors` with `msg`.
pub fn exception(py: Python<'_>, name: &str, msg: String) -> PyErr {
    match py.import("shmplane.errors").and_then(|m| m.getattr(name)) {
        Ok(cls) => match cls.cast_into::<PyType>() {
            Ok(cls) => PyErr::from_type(cls, msg),
            Err(e) => e.into(),
        },
        Err(e) => e,
    }
}

/// `Result<T, shmplane::Error>` → `PyResult<T>`.
pub trait IntoPyResult<T> {
    /// Map the error with [`to_py`].
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    #[inline]
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

/// `EACCES` (13 on Linux), the errno a refused segment carries.
const fn libc_eacces() -> i32 {
    13
}
