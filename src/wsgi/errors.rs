//! `wsgi.errors`: a text stream into the error log.

use pyo3::prelude::*;
use pyo3::types::PyAny;

#[pyclass(module = "ferrocorn._ferrocorn")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text: String = if let Ok(s) = text.extract::<String>() {
            s
        } else {
            let bytes: Vec<u8> = text.extract()?;
            String::from_utf8_lossy(&bytes).into_owned()
        };
        crate::log::write_raw(&text);
        Ok(text.len())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}
