//! `nomad:driver/env`: the plugin's environment (Nomad starts plugins with
//! the agent's), one granted variable at a time.
//!
//! Deny by default: only names granted with `env "NAME" {}` / `env
//! "PREFIX*" {}` in the grants file or `--allow-env` are read (see
//! [`Grants::check_env`]); a prefix does not cover secret-looking names,
//! and the variable a `secret` grant takes its key from is never handed to
//! the guest.

use std::ffi::OsString;

use crate::grants::Grants;
use crate::runtime::CallState;
use crate::runtime::bindings::nomad::driver::env::{EnvError, Host};

/// Reads `name` through `lookup` if the grants allow it.
pub fn get(
    grants: &Grants,
    name: &str,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, EnvError> {
    grants
        .check_env(name)
        .map_err(|e| EnvError::NotGranted(e.to_string()))?;
    match lookup(name) {
        None => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| {
            EnvError::NotUnicode(format!(
                "the environment variable {name} is set but its value is not UTF-8"
            ))
        }),
    }
}

impl Host for CallState {
    fn get(&mut self, name: String) -> Result<Option<String>, EnvError> {
        let result = get(&self.host.grants, &name, |n| std::env::var_os(n));
        match &result {
            Ok(v) => tracing::debug!(
                guest = %self.host.guest,
                name = %name,
                set = v.is_some(),
                "guest read an environment variable"
            ),
            Err(e) => tracing::debug!(guest = %self.host.guest, name = %name, "env refused: {e:?}"),
        }
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).map(Into::into)
    }

    const ENV: &[(&str, &str)] = &[
        ("TRITON_URL", "https://cloudapi.test"),
        ("TRITON_KEY_MATERIAL", "/etc/triton/id_rsa"),
        ("SDC_ACCOUNT", "ops"),
        ("HOME", "/root"),
    ];

    #[test]
    fn granted_variables_are_read_set_or_unset() {
        let g = Grants::default()
            .with_env("TRITON_URL")
            .unwrap()
            .with_env("TRITON_USER")
            .unwrap();
        assert_eq!(
            get(&g, "TRITON_URL", env(ENV)).unwrap().as_deref(),
            Some("https://cloudapi.test")
        );
        // Granted but unset: none, not an error.
        assert_eq!(get(&g, "TRITON_USER", env(ENV)).unwrap(), None);
    }

    #[test]
    fn not_granted_names_the_grant_and_reads_nothing() {
        let g = Grants::default().with_env("TRITON_URL").unwrap();
        let looked = std::cell::Cell::new(false);
        let err = get(&g, "HOME", |_| {
            looked.set(true);
            Some("/root".into())
        })
        .unwrap_err();
        assert!(!looked.get(), "a refused variable must not be read");
        let EnvError::NotGranted(text) = err else {
            panic!("expected not-granted, got {err:?}");
        };
        assert_eq!(
            text,
            "reading the environment variable HOME is not granted to this guest: add \
             `env \"HOME\" {}` to the grants file or `--allow-env HOME` to the plugin's args"
        );
    }

    #[test]
    fn prefix_grants_match_names_but_not_secret_looking_ones() {
        let g = Grants::default().with_env("TRITON_*").unwrap();
        assert_eq!(
            get(&g, "TRITON_URL", env(ENV)).unwrap().as_deref(),
            Some("https://cloudapi.test")
        );
        assert!(matches!(
            get(&g, "TRITON_KEY_MATERIAL", env(ENV)),
            Err(EnvError::NotGranted(t)) if t.contains("looks secret")
        ));
        assert!(matches!(
            get(&g, "SDC_ACCOUNT", env(ENV)),
            Err(EnvError::NotGranted(_))
        ));
    }

    #[test]
    fn a_secret_source_is_refused_even_when_granted_by_name() {
        let g = Grants::default()
            .with_env("TRITON_KEY_MATERIAL")
            .unwrap()
            .with_secret_env("triton", "TRITON_KEY_MATERIAL", None)
            .unwrap();
        assert!(matches!(
            get(&g, "TRITON_KEY_MATERIAL", env(ENV)),
            Err(EnvError::NotGranted(t)) if t.contains("secret \"triton\"")
        ));
    }

    #[test]
    fn a_value_that_is_not_utf8_is_an_error_naming_the_variable() {
        use std::os::unix::ffi::OsStringExt;
        let g = Grants::default().with_env("TRITON_URL").unwrap();
        let err = get(&g, "TRITON_URL", |_| {
            Some(OsString::from_vec(vec![0xff, 0xfe]))
        })
        .unwrap_err();
        assert!(matches!(err, EnvError::NotUnicode(t) if t.contains("TRITON_URL")));
    }
}
