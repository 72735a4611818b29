//! Listening sockets and the life of a connection, for the gRPC port and the HTTP listeners
//! alike: accept, TLS handshake (when configured), serve, and close without losing answers.
//!
//! iysgate owns this loop instead of tonic's `Server` for three guarantees tonic's does not
//! give:
//! - **Every accepted call is answered across shutdown.** When a connection ends, its socket
//!   is closed *lingering*: our side is shut down for writing (FIN after everything written)
//!   and what the peer still sends is read and dropped until it closes or [`LINGER`] passes.
//!   A plain close with unread bytes in the receive buffer makes the kernel send RST, and an
//!   RST makes the peer's kernel drop answers it had received but the client had not read
//!   yet: under load that lost answers to calls the server had accepted.
//! - **Queueing is visible.** Each call is stamped with its [`Arrival`] when hyper accepts the
//!   stream, before it waits for a worker thread or its body, so the admission in `api.rs`
//!   can shed a call that waited too long instead of answering it late.
//! - **Idle requests end.** A request body that sends nothing for `idle` (a Filter stream of
//!   HEADERS only, a unary call whose message never comes) fails with DEADLINE_EXCEEDED, so
//!   idle streams cannot pile up.
//!
//! It must never hold a call's answer back: what it adds per call is one timestamp, one
//! counter and one timer per request body.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Arrival;
use crate::app::tls::ReloadingTls;

/// How long a closed connection keeps reading what the peer still sends.
pub const LINGER: Duration = Duration::from_secs(2);
/// A TLS handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the gRPC port's HTTP/2 connections.
#[derive(Debug, Clone, Copy)]
pub struct GrpcSettings {
    pub max_concurrent_streams: u32,
    /// Calls of one connection in flight (until their response headers) before its new
    /// calls get RESOURCE_EXHAUSTED at once.
    pub max_in_flight_per_connection: usize,
    /// A request body that sends nothing for this long fails with DEADLINE_EXCEEDED.
    pub stream_idle_timeout: Duration,
}

/// Where connections come from: a bound socket, and TLS when configured.
pub struct Endpoint {
    pub listener: TcpListener,
    pub tls: Option<Arc<ReloadingTls>>,
}

impl Endpoint {
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            listener,
            tls: None,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Warns when `addr` is reachable from other machines without TLS: API keys and recipients
/// would cross the network in clear.
pub fn warn_if_plaintext(what: &str, addr: SocketAddr, tls: bool) {
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(
            listener = what,
            %addr,
            "listening without TLS on a non-loopback address: API keys and personal data cross \
             the network in clear (set --tls-cert and --tls-key)"
        );
    }
}

/// A connection's byte stream, with or without TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection that, when dropped, is closed lingering (see the module's doc) by a task of
/// `closing`, which the process waits for before it exits.
pub struct Lingering {
    conn: Option<Conn>,
    closing: TaskTracker,
    peer: SocketAddr,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.closing.track_future(linger(conn)));
        }
    }
}

/// Sends what is left and FIN, then reads until the peer closes (or [`LINGER`]), so the
/// final close finds an empty receive buffer and sends no RST.
async fn linger(mut conn: Conn) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = conn.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl Lingering {
    /// The address of the other end.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn conn(&mut self) -> Pin<&mut Conn> {
        Pin::new(self.conn.as_mut().expect("taken only on drop"))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().conn().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().conn().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().conn().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().conn().poll_flush(cx)
    }

    /// hyper shuts the connection down when it is done with it; the write side is closed
    /// for good only in [`linger`] (a FIN here and a RST at drop is the loss this avoids).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().conn().poll_flush(cx)
    }
}

/// Accepts connections until `stop`, runs `serve` for each (after the TLS handshake) in a
/// task of `conns`, and closes each lingering in a task of `closing`. `serve` gets the
/// connection and a token cancelled when the server starts draining: it should then finish
/// the calls it has and end.
pub async fn accept<F, Fut>(
    endpoint: Endpoint,
    stop: CancellationToken,
    conns: &TaskTracker,
    closing: &TaskTracker,
    serve: F,
) where
    F: Fn(TokioIo<Lingering>, CancellationToken) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Endpoint { listener, tls } = endpoint;
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let (serve, stop, closing) = (serve.clone(), stop.clone(), closing.clone());
        conns.spawn(async move {
            let conn = match acceptor {
                None => Conn::Plain(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let io = TokioIo::new(Lingering {
                conn: Some(conn),
                closing,
                peer,
            });
            serve(io, stop).await;
        });
    }
}

/// Serves one gRPC connection (HTTP/2 only) with `routes` until it ends, or until `drain`
/// and its calls are done (a GOAWAY first).
pub async fn serve_grpc_connection(
    io: TokioIo<Lingering>,
    routes: tonic::service::Routes,
    settings: GrpcSettings,
    drain: CancellationToken,
) {
    let service = GrpcConnection {
        routes,
        in_flight: Arc::default(),
        settings,
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "gRPC connection ended with an error");
            }
            return;
        }
        () = drain.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "gRPC connection ended with an error while draining");
    }
}

/// Serves one HTTP connection (HTTP/1.1 or HTTP/2) with an axum `router`.
pub async fn serve_http_connection(
    io: TokioIo<Lingering>,
    router: axum::Router,
    drain: CancellationToken,
) {
    // Handlers that need the caller's address (the panel's login limit) read `ConnectInfo`.
    let peer = axum::extract::ConnectInfo(io.inner().peer());
    let router = tower::ServiceExt::map_request(
        router,
        move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer);
            req
        },
    );
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            return;
        }
        () = drain.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Serves an axum `router` on `endpoint` until `stop`; connections are tracked by `tasks`.
pub fn spawn_http(
    endpoint: Endpoint,
    router: axum::Router,
    stop: CancellationToken,
    tasks: &TaskTracker,
) {
    let (conns, closing) = (tasks.clone(), tasks.clone());
    tasks.spawn(async move {
        accept(endpoint, stop, &conns, &closing, move |io, drain| {
            serve_http_connection(io, router.clone(), drain)
        })
        .await;
    });
}

/// The per-connection gRPC service: stamps arrival, bounds the connection's calls in flight,
/// enforces the caller's `grpc-timeout` until the response headers, and puts an idle timer
/// on the request body; then routes the call.
#[derive(Clone)]
struct GrpcConnection {
    routes: tonic::service::Routes,
    in_flight: Arc<AtomicUsize>,
    settings: GrpcSettings,
}

type Answer = http::Response<tonic::body::Body>;

impl hyper::service::Service<http::Request<Incoming>> for GrpcConnection {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let arrival = Arrival(Instant::now());
        let count = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(Arc::clone(&self.in_flight));
        if count >= self.settings.max_in_flight_per_connection {
            crate::telemetry::shed(crate::telemetry::Shed::Connection);
            return Box::pin(std::future::ready(Ok(tonic::Status::resource_exhausted(
                "too many calls in flight on this connection; retry with backoff",
            )
            .into_http())));
        }
        let deadline = crate::api::grpc_timeout_header(request.headers());
        let idle = self.settings.stream_idle_timeout;
        let mut request = request.map(|body| tonic::body::Body::new(IdleBody::new(body, idle)));
        request.extensions_mut().insert(arrival);
        let call = tower::ServiceExt::oneshot(self.routes.clone(), request);
        Box::pin(async move {
            let _slot = slot;
            let answer = match deadline {
                None => call.await,
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(answer) => answer,
                    Err(_) => Ok(tonic::Status::deadline_exceeded(
                        "the call's deadline passed before it was answered",
                    )
                    .into_http()),
                },
            };
            Ok(answer.unwrap_or_else(|never| match never {}))
        })
    }
}

/// A call counted in its connection's in-flight calls until dropped.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails when nothing arrives for `idle` while the server waits for
    /// it (time the server spends elsewhere, e.g. pacing a Filter stream, does not count).
    pub struct IdleBody {
        #[pin]
        inner: Incoming,
        idle: Duration,
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
        }
    }
}

impl http_body::Body for IdleBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.timer.set(None);
            return Poll::Ready(frame.map(|f| f.map_err(|e| tonic::Status::from_error(e.into()))));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(*this.idle)));
        }
        let timer = this.timer.as_pin_mut().expect("set above");
        ready!(timer.poll(cx));
        Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(format!(
            "no request data for {} s: idle stream closed",
            this.idle.as_secs()
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
