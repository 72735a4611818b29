//! A bare tonic 0.14 gRPC server answering `iysgate.loadtest.v1.Echo/Check` with a fixed reply
//! as large as a real ALLOW answer, doing nothing else: the floor a Check server can reach on
//! this machine. Usage: `iysgate-echo-baseline [ADDR]` (default 127.0.0.1:50052); the tokio
//! worker threads follow `TOKIO_WORKER_THREADS` as any tokio program does.

pub mod iysgate {
    pub mod v1 {
        tonic::include_proto!("iysgate.v1");
    }
    pub mod loadtest {
        pub mod v1 {
            tonic::include_proto!("iysgate.loadtest.v1");
        }
    }
}

use iysgate::loadtest::v1::echo_server::{Echo, EchoServer};
use iysgate::v1::{CheckRequest, CheckResponse, ConsentStatus, Decision, Reason, Source, Verdict};
use tonic::{Request, Response, Status};

struct Baseline {
    reply: CheckResponse,
}

#[tonic::async_trait]
impl Echo for Baseline {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.reply.clone()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50052".into());
    let reply = CheckResponse {
        decision: Some(Decision {
            verdict: Verdict::Allow.into(),
            reason: Reason::ConsentRegistered.into(),
            status: ConsentStatus::Onay.into(),
            source: Source::HsWeb.into(),
            consent_date: "2025-06-02 11:09".into(),
            data_age_ms: 412,
            ..Decision::default()
        }),
        recipient: "+905321234567".into(),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("echo baseline on {}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(EchoServer::new(Baseline { reply }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
