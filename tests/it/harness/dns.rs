//! A small authoritative DNS server on loopback, for tests of backend names (SPEC §12).
//!
//! Tests must never ask the machine's resolver about their names, so they run this instead
//! and point `resolver.nameservers` at it. It answers UDP and TCP on one port from a zone the
//! test edits while it runs: A, AAAA and SRV records with their TTLs ([`DnsServer::set_a`],
//! [`DnsServer::set_srv`], ...), a name that exists with no records of a type (an empty
//! answer), a name that does not exist (NXDOMAIN). [`DnsServer::answer`] switches every answer
//! to empty, SERVFAIL or none at all, and [`DnsServer::stop`] closes the sockets. It counts the
//! queries it receives per name. Messages are parsed and written with hickory-proto; the
//! serving is ours.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How the server answers, whatever the zone says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// From the zone (the default).
    Zone,
    /// NOERROR with no records, for every query.
    Empty,
    /// SERVFAIL for every query.
    ServFail,
    /// Reads queries and never answers (a server that hangs: the client times out).
    Silent,
}

#[derive(Default)]
struct Zone {
    /// (name, type) → (TTL, records). A name present with an empty list answers NOERROR, none.
    records: HashMap<(String, RecordType), (u32, Vec<RData>)>,
    answering: Option<Answering>,
    queries: HashMap<String, usize>,
}

/// Lower-cased, without the trailing dot: how the zone keys names.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

pub struct DnsServer {
    /// UDP and TCP, the same port.
    pub address: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        // UDP first, then TCP on the same port; another process may hold that TCP port.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
            let address = udp.local_addr().expect("udp address");
            if let Ok(tcp) = TcpListener::bind(address).await {
                break (udp, tcp);
            }
        };
        let address = udp.local_addr().expect("udp address");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let tasks = vec![
            tokio::spawn(serve_udp(udp, Arc::clone(&zone))),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&zone))),
        ];
        DnsServer {
            address,
            zone,
            tasks,
        }
    }

    fn set(&self, name: &str, rtype: RecordType, ttl: u32, data: Vec<RData>) {
        let mut zone = self.zone.lock().unwrap();
        zone.records.insert((key(name), rtype), (ttl, data));
    }

    /// `name`'s A records (an empty list: the name exists, with no A records).
    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        let data = ips.iter().map(|&ip| RData::A(A(ip))).collect();
        self.set(name, RecordType::A, ttl, data);
    }

    pub fn set_aaaa(&self, name: &str, ips: &[Ipv6Addr], ttl: u32) {
        let data = ips.iter().map(|&ip| RData::AAAA(AAAA(ip))).collect();
        self.set(name, RecordType::AAAA, ttl, data);
    }

    /// `name`'s SRV records as (priority, weight, port, target).
    pub fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)], ttl: u32) {
        let data = records
            .iter()
            .map(|&(priority, weight, port, target)| {
                let target = Name::from_ascii(format!("{}.", key(target))).expect("target name");
                RData::SRV(SRV::new(priority, weight, port, target))
            })
            .collect();
        self.set(name, RecordType::SRV, ttl, data);
    }

    /// Every record of `name`: it no longer exists (NXDOMAIN).
    pub fn remove(&self, name: &str) {
        let name = key(name);
        self.zone
            .lock()
            .unwrap()
            .records
            .retain(|(n, _), _| *n != name);
    }

    /// How every query is answered from now on.
    pub fn answer(&self, answering: Answering) {
        self.zone.lock().unwrap().answering = Some(answering);
    }

    /// Queries received for `name`, any type.
    pub fn queries(&self, name: &str) -> usize {
        let zone = self.zone.lock().unwrap();
        zone.queries.get(&key(name)).copied().unwrap_or(0)
    }

    /// Closes both sockets: queries are refused (UDP: port unreachable) from now on.
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The answer to one query message, or `None` for no answer.
fn respond(zone: &Mutex<Zone>, query: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut zone = zone.lock().unwrap();
    for q in query.queries() {
        *zone.queries.entry(key(&q.name().to_ascii())).or_default() += 1;
    }
    let answering = zone.answering.unwrap_or(Answering::Zone);
    let mut response = Message::new();
    response
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .add_queries(query.queries().to_vec());
    match answering {
        Answering::Silent => return None,
        Answering::ServFail => {
            response.set_response_code(ResponseCode::ServFail);
        }
        Answering::Empty => {}
        Answering::Zone => {
            for q in query.queries() {
                let name = key(&q.name().to_ascii());
                match zone.records.get(&(name.clone(), q.query_type())) {
                    Some((ttl, data)) => {
                        for d in data {
                            response.add_answer(Record::from_rdata(
                                q.name().clone(),
                                *ttl,
                                d.clone(),
                            ));
                        }
                    }
                    None if zone.records.keys().any(|(n, _)| *n == name) => {}
                    None => {
                        response.set_response_code(ResponseCode::NXDomain);
                    }
                }
            }
        }
    }
    response.to_vec().ok()
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(answer) = respond(&zone, &buf[..n]) {
            let _ = socket.send_to(&answer, from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Mutex<Zone>>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        // Owned by this task, so `stop` (aborting it) closes them too.
        connections.spawn(serve_tcp_connection(stream, Arc::clone(&zone)));
    }
}

/// Length-prefixed messages (RFC 1035 §4.2.2), one answer per query, until the client closes.
async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Mutex<Zone>>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut message = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut message).await.is_err() {
            return;
        }
        let Some(answer) = respond(&zone, &message) else {
            continue;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        if stream.write_u16(len).await.is_err() || stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// Backends named `names[i]` on `ips[i]` (127.0.0.x), all on one port: what the A records of
/// one `host:PORT` backend name stand for. Returns the port and the backends.
pub async fn backends_on_one_port(names: &[&str], ips: &[&str]) -> (u16, Vec<super::Backend>) {
    'port: for _ in 0..50 {
        let port = super::free_port();
        let mut backends = Vec::new();
        for (name, ip) in names.iter().zip(ips) {
            match super::Backend::start_at(name, SocketAddr::new(v4(ip).into(), port)).await {
                Ok(b) => backends.push(b),
                Err(_) => continue 'port,
            }
        }
        return (port, backends);
    }
    panic!("no port free on all of {ips:?}");
}

/// An IPv4 address from text, for `set_a`.
pub fn v4(ip: &str) -> Ipv4Addr {
    match ip.parse() {
        Ok(IpAddr::V4(ip)) => ip,
        _ => panic!("not an IPv4 address: {ip}"),
    }
}
