//! Location strings that look like paths but are not meant as local directories: restic-style
//! `scheme:rest` locations and an unexpanded `~`. Taken literally they would silently create a
//! local directory of that name, so they are refused with the syntax Lifeboat expects.

/// restic's backend prefixes (`s3:host/bucket`, `sftp:user@host:/path`, ...).
const RESTIC_SCHEMES: &[&str] = &[
    "s3", "sftp", "rest", "azure", "gs", "b2", "rclone", "swift", "smb",
];

/// Why `location` (trimmed, without `://`) must not be taken as a local path, if it must not.
pub(crate) fn foreign_syntax(location: &str) -> Option<String> {
    if location.starts_with('~') {
        return Some(
            "'~' was not expanded (shells expand it only at the start of an unquoted word, \
             not after '=' or inside quotes): give an absolute path such as $HOME/backup or \
             /home/USER/backup"
                .into(),
        );
    }
    let (scheme, rest) = location.split_once(':')?;
    // `s3://...` is a URL, Lifeboat's own syntax.
    if !RESTIC_SCHEMES.contains(&scheme) || rest.starts_with("//") {
        return None;
    }
    let literal = format!(" (for a local directory with this name, write ./{location})");
    if scheme == "s3" {
        return Some(format!("{}{literal}", s3_hint(rest)));
    }
    Some(format!(
        "this is restic's syntax for its {scheme} backend, which Lifeboat does not have: use a \
         local path (e.g. where the storage is mounted), file:///path, or s3://BUCKET/PREFIX \
         for S3-compatible storage{literal}"
    ))
}

/// restic's `s3:[http(s)://]host[:port]/bucket[/prefix]` translated to Lifeboat's form.
fn s3_hint(rest: &str) -> String {
    let (proto, hostpath) = match rest.split_once("://") {
        Some((p, h)) => (format!("{p}://"), h),
        None => ("https://".to_owned(), rest),
    };
    let expected = "Lifeboat expects s3://BUCKET/PREFIX, with the endpoint in --s3-endpoint \
                    (or AWS_ENDPOINT_URL)";
    match hostpath.split_once('/') {
        Some((host, bucket_prefix)) if !host.is_empty() && !bucket_prefix.is_empty() => {
            format!(
                "this is restic's S3 syntax: {expected}, here: \
                 --repo s3://{bucket_prefix} --s3-endpoint {proto}{host}"
            )
        }
        _ => format!("this is restic's S3 syntax: {expected}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_s3_is_translated() {
        let msg = foreign_syntax("s3:minio.local:9000/bucket/pre/fix").expect("refused");
        assert!(
            msg.contains("s3://bucket/pre/fix --s3-endpoint https://minio.local:9000"),
            "{msg}"
        );
        let msg = foreign_syntax("s3:http://127.0.0.1:9000/b").expect("refused");
        assert!(
            msg.contains("s3://b --s3-endpoint http://127.0.0.1:9000"),
            "{msg}"
        );
    }

    #[test]
    fn other_restic_backends_and_tilde_are_refused() {
        for loc in [
            "sftp:user@host:/srv/repo",
            "rest:http://host:8000/",
            "azure:container:/path",
            "gs:bucket:/path",
            "b2:bucket:path",
            "rclone:remote:path",
            "~/backup",
            "~user/backup",
        ] {
            assert!(foreign_syntax(loc).is_some(), "{loc} accepted");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for loc in [
            "/srv/repo",
            "./s3:odd",
            "repo",
            "back:up",
            "a~b",
            "/x/~y",
            "s3://bucket/prefix",
            "file:///srv",
        ] {
            assert_eq!(foreign_syntax(loc), None, "{loc}");
        }
    }
}
