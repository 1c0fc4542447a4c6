//! [`Resolve`] on hickory-resolver: the system's configuration (`/etc/resolv.conf`) or the
//! `resolver.nameservers` of the config, over UDP and TCP, with `/etc/hosts` read first.
//!
//! hickory's own answer cache is turned off (every entry expires at once): discovery decides
//! when to ask again from the clamped TTLs, and a cached answer would hide a change for as long
//! as the record's TTL, well past `max_ttl`. Of a name's addresses the A records are used, the
//! AAAA records only when there are no A records (hickory's `Ipv4thenIpv6`): a name with both
//! is nearly always one host reachable both ways, and sending half its traffic to an address
//! family the backend may not listen on (`localhost` is 127.0.0.1 and ::1) would fail it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use super::resolve::{Failure, Lookup, Record, Resolve, SrvRecord};

/// How long one query to one server may take. Lookups run in the background, so this only
/// decides how soon a server that stopped answering counts as failed (the last good set is
/// kept meanwhile).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The real resolver. Cheap to share: discovery holds it in an `Arc`.
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// A resolver for the `resolver:` block: its nameservers, or the system's when none are
    /// given. Fails only when the system's configuration cannot be read.
    pub fn new(config: &switchyard_config::Resolver) -> Result<HickoryResolver, String> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
        } else {
            let mut servers = ResolverConfig::new();
            for &address in &config.nameservers {
                servers.add_name_server(NameServerConfig::new(address, Protocol::Udp));
                servers.add_name_server(NameServerConfig::new(address, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(servers, provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        options.use_hosts_file = ResolveHosts::Always;
        options.cache_size = 0;
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 1;
        Ok(HickoryResolver {
            inner: builder.build(),
        })
    }

    /// The servers this resolver asks, for the log at start.
    pub fn nameservers(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .inner
            .config()
            .name_servers()
            .iter()
            .map(|s| s.socket_addr)
            .collect();
        out.dedup();
        out
    }
}

/// SPEC §12's classes: NOERROR with no records is `empty`; everything else (NXDOMAIN,
/// SERVFAIL, REFUSED, a timeout, a socket error) is `error`.
fn classify(e: &ResolveError) -> Failure {
    if let Some(proto) = e.proto() {
        if let ProtoErrorKind::NoRecordsFound { response_code, .. } = proto.kind() {
            if *response_code == ResponseCode::NoError {
                return Failure::Empty;
            }
        }
    }
    Failure::Error(e.to_string())
}

fn records<T>(found: Vec<Record<T>>) -> Lookup<T> {
    if found.is_empty() {
        Err(Failure::Empty)
    } else {
        Ok(found)
    }
}

fn ttl(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds))
}

impl Resolve for HickoryResolver {
    async fn lookup_ip(&self, host: &str) -> Lookup<IpAddr> {
        let answer = self.inner.lookup_ip(host).await.map_err(|e| classify(&e))?;
        // CNAME records of the chain come along; their TTLs bound the answer's too.
        let chain_ttl = answer
            .as_lookup()
            .records()
            .iter()
            .map(|r| ttl(r.ttl()))
            .min();
        records(
            answer
                .as_lookup()
                .records()
                .iter()
                .filter_map(|r| {
                    let value = match r.data() {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => return None,
                    };
                    let ttl = chain_ttl.unwrap_or_default().min(ttl(r.ttl()));
                    Some(Record { value, ttl })
                })
                .collect(),
        )
    }

    async fn lookup_srv(&self, name: &str) -> Lookup<SrvRecord> {
        let answer = self
            .inner
            .srv_lookup(name)
            .await
            .map_err(|e| classify(&e))?;
        records(
            answer
                .as_lookup()
                .records()
                .iter()
                .filter_map(|r| match r.data() {
                    RData::SRV(srv) => Some(Record {
                        value: SrvRecord {
                            priority: srv.priority(),
                            weight: srv.weight(),
                            port: srv.port(),
                            target: srv.target().to_ascii(),
                        },
                        ttl: ttl(r.ttl()),
                    }),
                    _ => None,
                })
                .collect(),
        )
    }
}
