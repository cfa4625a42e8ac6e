//! The client IP: the peer address, unless the peer is a `--trusted-proxy`;
//! then the right-most `X-Forwarded-For` entry that is not itself trusted.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| ApiError::internal("server started without connect info"))?;
        Ok(ClientIp(resolve(peer, parts, |ip| {
            state.config.is_trusted_proxy(ip)
        })))
    }
}

fn resolve(peer: IpAddr, parts: &Parts, trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    // Every X-Forwarded-For header, in order, as one list of hops.
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted(ip) {
                    break;
                }
            }
            // A hop we cannot read ends what we can believe.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(xff: &[&str]) -> Parts {
        let mut builder = Request::builder();
        for v in xff {
            builder = builder.header("x-forwarded-for", *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_trusted_peers_may_name_the_client() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let p = parts(&["1.2.3.4, 10.0.0.9"]);
        assert_eq!(resolve(proxy, &p, trusted), "1.2.3.4".parse::<IpAddr>().unwrap());
        // A spoofed left-most entry is ignored: the right-most untrusted wins.
        let p = parts(&["6.6.6.6", "5.5.5.5"]);
        assert_eq!(resolve(proxy, &p, trusted), "5.5.5.5".parse::<IpAddr>().unwrap());
        // An untrusted peer's header is not believed.
        let stranger: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(resolve(stranger, &p, trusted), stranger);
        // No header: the proxy itself.
        assert_eq!(resolve(proxy, &parts(&[]), trusted), proxy);
    }
}
