//! What a browser may do: the Origin policy (cross-site pages may not open WebSockets or send
//! state-changing requests) and the Host policy (a loopback server answers only to loopback
//! names, against DNS rebinding).

use axum::http::{HeaderMap, Uri, header};

/// The authority a request was sent to, the same on every HTTP version: the request URI's
/// authority (HTTP/2's `:authority`, or an HTTP/1.1 absolute-form target, which RFC 9112
/// §3.2.2 says wins over `Host`), else the `Host` header (HTTP/1.1's origin form). HTTP/2
/// sends no `Host` of its own, so a policy that read only `Host` would see none there.
/// `Err` when `Host` is not text.
pub fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<Option<&'a str>, String> {
    if let Some(authority) = uri.authority() {
        return Ok(Some(authority.as_str()));
    }
    match headers.get(header::HOST) {
        None => Ok(None),
        Some(host) => host.to_str().map(Some).map_err(|_| "(not text)".to_owned()),
    }
}

/// The Origin policy. Requests without `Origin` come from non-browser clients and pass. A
/// browser origin passes when it is listed in `allowed_origins` (or the list holds `*`), when
/// it names the host the request was sent to, or when it is localhost/127.0.0.1/[::1]. `null`
/// (a page opened from disk, as the seed's chat page is) passes only while HTTP listens on a
/// loopback address, where no remote site can reach it anyway. `target` is the request's
/// `authority`.
pub fn check(
    allowed: &[String],
    loopback: bool,
    target: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| "(not text)".to_owned())?;
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    if origin == "null" {
        return if loopback {
            Ok(())
        } else {
            Err(origin.to_owned())
        };
    }
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .ok_or_else(|| origin.to_owned())?;
    if is_loopback_name(&host_of(authority)) {
        return Ok(());
    }
    let same_host = target.is_some_and(|t| t.eq_ignore_ascii_case(authority));
    if same_host {
        Ok(())
    } else {
        Err(origin.to_owned())
    }
}

/// The host part of a `Host` header value or an origin's authority, lowercased.
pub fn host_of(authority: &str) -> String {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// True for names that can only mean this machine.
pub fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The Host policy while listening on loopback: a loopback name or one of `allowed`. A
/// rebinding attack reaches us under the attacker's name, which is refused. Requests
/// without an authority (neither in the URI nor in `Host`) come from non-browser clients and
/// pass: a browser always sends one. `target` is the request's `authority`.
pub fn check_host(allowed: &[String], target: Option<&str>) -> Result<(), String> {
    let Some(value) = target else {
        return Ok(());
    };
    let host = host_of(value);
    if is_loopback_name(&host)
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(&host))
    {
        Ok(())
    } else {
        Err(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// `check` as the guard calls it, the target read from `Host` (an origin-form request).
    fn check_h1(allowed: &[String], loopback: bool, h: &HeaderMap) -> Result<(), String> {
        let uri = Uri::from_static("/");
        check(allowed, loopback, authority(&uri, h).unwrap(), h)
    }

    #[test]
    fn rebinding_hosts_are_refused_on_loopback() {
        assert!(check_host(&[], Some("127.0.0.1:8000")).is_ok());
        assert!(check_host(&[], Some("localhost:8000")).is_ok());
        assert!(check_host(&[], Some("[::1]:8000")).is_ok());
        assert!(check_host(&[], None).is_ok());
        assert_eq!(
            check_host(&[], Some("evil.example:8000")),
            Err("evil.example".into())
        );
        assert!(check_host(&["chat.example".into()], Some("chat.example")).is_ok());
    }

    #[test]
    fn the_uri_authority_wins_over_host() {
        let h2 = Uri::from_static("https://evil.example:8443/rooms");
        let none = HeaderMap::new();
        assert_eq!(authority(&h2, &none), Ok(Some("evil.example:8443")));
        let h1 = Uri::from_static("/rooms");
        let host = headers(&[("host", "127.0.0.1:8000")]);
        assert_eq!(authority(&h1, &host), Ok(Some("127.0.0.1:8000")));
        assert_eq!(authority(&h2, &host), Ok(Some("evil.example:8443")));
        assert_eq!(authority(&h1, &none), Ok(None));
    }

    #[test]
    fn cross_site_origins_are_refused() {
        let h = headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "https://evil.example"),
        ]);
        assert!(check_h1(&[], true, &h).is_err());
        let h = headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000"),
        ]);
        assert!(check_h1(&[], true, &h).is_ok());
        let h = headers(&[
            ("host", "evil.example:8000"),
            ("origin", "http://evil.example:8000"),
        ]);
        // Same-host passes the Origin policy; the Host policy is what refuses this one.
        assert!(check_h1(&[], true, &h).is_ok());
    }
}
