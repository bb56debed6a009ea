//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`:
//! ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata,
//! ModelInfer) on its own HTTP/2 listener, served by tonic's unary handler
//! over the gateway's own connections and TLS.
//!
//! Every model call goes through the gateway's one path: the bearer token
//! in the `authorization` metadata (or the client certificate) is
//! authenticated and the per-principal limit applied *before* the message is
//! read (as REST does before reading a body), `model.infer` on `model:NAME`
//! is authorized (denials audited), the per-endpoint limit applies, and the
//! request is bounded: message size before decoding, tensor elements, the
//! whole call (reading included) by the request timeout, 32 streams per
//! connection, connections of their own (a gRPC flood cannot take REST's),
//! and idle connections closed. It is counted and logged like a REST one.
//! Failures map to gRPC codes: 400 → INVALID_ARGUMENT, 401 →
//! UNAUTHENTICATED, 403 → PERMISSION_DENIED, 404 → NOT_FOUND, 413 and 429 →
//! RESOURCE_EXHAUSTED, 503 → UNAVAILABLE, 504 → DEADLINE_EXCEEDED; a 5xx
//! says nothing internal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::Status;
use tonic_prost::ProstCodec;

use super::{ApiError, Gateway, RequestFacts, api};
use crate::grpc_pb as pb;
use citadel_policy::Action;

const SERVICE: &str = "/inference.GRPCInferenceService/";

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;

/// What a method handler knows of its call besides the message.
#[derive(Clone)]
struct Ctx {
    peer: Peer,
    facts: Arc<std::sync::Mutex<RequestFacts>>,
    request_id: String,
    /// The caller, authenticated from the call's headers before its message was read.
    caller: Option<Arc<citadel_control::Caller>>,
}

/// Seconds a gRPC connection may stay open with no call in flight.
const IDLE_SECONDS: u64 = 60;

type Handler<R, T> = fn(Arc<Gateway>, tonic::Request<R>, Ctx) -> BoxFuture<T>;

/// One gRPC method as a tower service over its decoded request, bounded by the request timeout.
struct Method<R, T> {
    gw: Arc<Gateway>,
    ctx: Ctx,
    handler: Handler<R, T>,
}

impl<R, T: Send + 'static> tower_service::Service<tonic::Request<R>> for Method<R, T> {
    type Response = tonic::Response<T>;
    type Error = Status;
    type Future = BoxFuture<tonic::Response<T>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Status>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<R>) -> Self::Future {
        let timeout = self.gw.config.limits.request_timeout;
        let fut = (self.handler)(self.gw.clone(), req, self.ctx.clone());
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map(tonic::Response::new),
                Err(_) => Err(Status::deadline_exceeded("the request took longer than the gateway's request timeout")),
            }
        })
    }
}

fn status(e: ApiError) -> Status {
    let code = match e.status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        StatusCode::NOT_IMPLEMENTED => tonic::Code::Unimplemented,
        StatusCode::GATEWAY_TIMEOUT => tonic::Code::DeadlineExceeded,
        _ => return Status::internal("the model failed on this request"),
    };
    Status::new(code, e.message)
}

/// The HTTP status a gRPC code stands for, so metrics and access logs count both protocols alike.
fn http_code(code: tonic::Code) -> u16 {
    match code {
        tonic::Code::Ok => 200,
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => 400,
        tonic::Code::Unauthenticated => 401,
        tonic::Code::PermissionDenied => 403,
        tonic::Code::NotFound | tonic::Code::Unimplemented => 404,
        tonic::Code::ResourceExhausted => 429,
        tonic::Code::Unavailable => 503,
        tonic::Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

/// Who is calling and from where, for one request.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    client_fp: Option<Arc<String>>,
}

impl Gateway {
    pub(super) async fn serve_grpc_connection<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        client_fp: Option<String>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let gw = self.clone();
        let peer = Peer { addr: peer, client_fp: client_fp.map(Arc::new) };
        // Calls in flight, and when the last one ended (seconds since `opened`).
        let opened = Instant::now();
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flight, seen) = (in_flight.clone(), last.clone());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (gw, peer, flight, seen) = (gw.clone(), peer.clone(), flight.clone(), seen.clone());
            async move {
                flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let r = gw.grpc(req, peer).await;
                seen.store(opened.elapsed().as_secs(), std::sync::atomic::Ordering::SeqCst);
                flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(32)
            .max_header_list_size(16 * 1024)
            .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .keep_alive_timeout(std::time::Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = &mut conn => break,
                // Shutdown: GOAWAY; calls in flight finish, then the connection ends.
                _ = stop.wait_for(|stopped| *stopped), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick() => {
                    let idle = opened.elapsed().as_secs().saturating_sub(last.load(std::sync::atomic::Ordering::SeqCst));
                    if in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 && idle >= IDLE_SECONDS {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }

    /// Routes one gRPC call to its method.
    async fn grpc(self: &Arc<Self>, req: Request<Incoming>, peer: Peer) -> Response<tonic::body::Body> {
        let path = req.uri().path().to_string();
        let method = path.strip_prefix(SERVICE).unwrap_or("").to_string();
        let limit = self.config.limits.max_body_bytes;
        let started = Instant::now();
        let request_id = self.request_ids.next();
        let facts = Arc::new(std::sync::Mutex::new(RequestFacts::default()));
        // Model calls are authenticated, and the principal's limit applied,
        // before tonic reads and decodes the message.
        let mut caller = None;
        if matches!(method.as_str(), "ModelReady" | "ModelMetadata" | "ModelInfer") {
            let mut f = RequestFacts { peer: Some(peer.addr.ip()), ..RequestFacts::default() };
            let fp = peer.client_fp.as_deref().map(String::as_str);
            let admitted = match self.authenticate(req.headers(), fp, &mut f).await {
                Ok(c) => {
                    self.check_rate(c.id(), &self.principal_limits, "principal", "(grpc)", c.name()).await.map(|()| c)
                }
                Err(e) => Err(e),
            };
            if let Ok(mut shared) = facts.lock() {
                *shared = f;
            }
            match admitted {
                Ok(c) => caller = Some(c),
                Err(e) => return self.grpc_done(status(e).into_http(), &facts, started, &peer, &path, &request_id),
            }
        }
        let ctx = Ctx { peer: peer.clone(), facts: facts.clone(), request_id: request_id.clone(), caller };
        let timeout = self.config.limits.request_timeout;
        macro_rules! unary {
            ($req:ty, $resp:ty, $handler:expr) => {{
                let svc = Method::<$req, $resp> { gw: self.clone(), ctx, handler: $handler };
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<$resp, $req>::default()).max_decoding_message_size(limit);
                let call = grpc.unary(svc, req);
                // The whole call, reading the message included, within the request timeout.
                match tokio::time::timeout(timeout, call).await {
                    Ok(r) => r,
                    Err(_) => Status::deadline_exceeded("the request took longer than the gateway's request timeout")
                        .into_http(),
                }
            }};
        }
        let response = match method.as_str() {
            "ServerLive" => unary!(pb::Empty, pb::ServerLiveResponse, server_live),
            "ServerReady" => unary!(pb::Empty, pb::ServerReadyResponse, server_ready),
            "ServerMetadata" => unary!(pb::Empty, pb::ServerMetadataResponse, server_metadata),
            "ModelReady" => unary!(pb::ModelRef, pb::ModelReadyResponse, model_ready),
            "ModelMetadata" => unary!(pb::ModelRef, pb::ModelMetadataResponse, model_metadata),
            "ModelInfer" => unary!(pb::ModelInferRequest, pb::ModelInferResponse, model_infer),
            _ => Status::unimplemented(format!("no method {path}; the service is inference.GRPCInferenceService"))
                .into_http(),
        };
        self.grpc_done(response, &facts, started, &peer, &path, &request_id)
    }

    /// Counts and logs a finished call (a status set before the handler ran
    /// is in the headers; one from the handler arrives in trailers and is
    /// counted as answered).
    fn grpc_done(
        &self,
        response: Response<tonic::body::Body>,
        facts: &std::sync::Mutex<RequestFacts>,
        started: Instant,
        peer: &Peer,
        path: &str,
        request_id: &str,
    ) -> Response<tonic::body::Body> {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(tonic::Code::from_i32)
            .unwrap_or(tonic::Code::Ok);
        let facts = facts.lock().map(|f| f.clone()).unwrap_or_default();
        if code != tonic::Code::Ok {
            self.metrics
                .errors
                .get_or_create(&crate::metrics::ErrorLabels {
                    endpoint: facts.endpoint.clone().unwrap_or_default(),
                    kind: format!("grpc_{code:?}").to_lowercase(),
                })
                .inc();
        }
        self.record(&facts, http_code(code), started.elapsed(), peer.addr, "POST", path, request_id, None);
        response
    }

    /// Authenticates and authorizes a call on model `name` and finds its endpoint.
    async fn grpc_model<R>(
        &self,
        r: &tonic::Request<R>,
        name: &str,
        version: &str,
        ctx: &Ctx,
    ) -> Result<(Arc<citadel_control::Caller>, Arc<super::Endpoint>, Option<i64>), Status> {
        let mut f = ctx.facts.lock().map(|f| f.clone()).unwrap_or_default();
        f.endpoint = Some(name.to_string());
        let result = async {
            let caller = match &ctx.caller {
                Some(c) => c.clone(),
                None => {
                    let headers = r.metadata().clone().into_headers();
                    let fp = ctx.peer.client_fp.as_deref().map(String::as_str);
                    self.authenticate(&headers, fp, &mut f).await?
                }
            };
            self.authorize(&caller, Action::Infer, citadel_policy::Resource::model(name), &ctx.request_id).await?;
            let endpoint = self.served(name)?;
            let version =
                match version {
                    "" => None,
                    v => Some(v.parse::<i64>().map_err(|_| {
                        api(StatusCode::BAD_REQUEST, "bad_request", "the model version must be a number")
                    })?),
                };
            if let Some(v) = version
                && !endpoint.targets.iter().any(|(t, _)| t.version == v)
            {
                return Err(api(StatusCode::NOT_FOUND, "not_found", format!("{name} does not serve version {v}")));
            }
            Ok::<_, ApiError>((caller, endpoint, version))
        }
        .await;
        if let Ok(mut shared) = ctx.facts.lock() {
            *shared = f;
        }
        result.map_err(status)
    }

    async fn grpc_infer(
        self: &Arc<Self>,
        r: tonic::Request<pb::ModelInferRequest>,
        ctx: &Ctx,
    ) -> Result<pb::ModelInferResponse, Status> {
        let (name, version) = (r.get_ref().model_name.clone(), r.get_ref().model_version.clone());
        let (caller, endpoint, pinned) = self.grpc_model(&r, &name, &version, ctx).await?;
        let headers = r.metadata().clone().into_headers();
        let mut f = ctx.facts.lock().map(|f| f.clone()).unwrap_or_default();
        let admitted = self.admit(&caller, &endpoint, &headers, pinned, &mut f, false).await;
        if let Ok(mut shared) = ctx.facts.lock() {
            *shared = f;
        }
        let (served, shadow) = admitted.map_err(status)?;
        let request = pb::decode_infer(r.into_inner(), self.config.limits.max_tensor_elements)
            .map_err(|e| Status::invalid_argument(e.0))?;
        let done = self
            .run_inference(&endpoint, served, shadow, request, &ctx.request_id, caller.name())
            .await
            .map_err(status)?;
        let mut outputs = Vec::with_capacity(done.selected.len());
        let mut raw = Vec::with_capacity(done.selected.len());
        for &(i, _) in &done.selected {
            let t = &done.outputs[i];
            let mut parameters = std::collections::HashMap::new();
            if let Some(c) = done.classes(i) {
                parameters.insert(
                    "classes".to_string(),
                    pb::InferParameter {
                        parameter_choice: Some(pb::ParameterChoice::StringParam(
                            serde_json::to_string(c).unwrap_or_default(),
                        )),
                    },
                );
            }
            outputs.push(pb::InferOutputTensor {
                name: done.loaded.model.outputs[i].name.clone(),
                datatype: t.dtype().v2_name().into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                parameters,
                contents: None,
            });
            raw.push(crate::v2::binary_data(t));
        }
        Ok(pb::ModelInferResponse {
            model_name: endpoint.name.clone(),
            model_version: done.loaded.version.to_string(),
            id: done.id.clone().unwrap_or_default(),
            parameters: Default::default(),
            outputs,
            raw_output_contents: raw,
        })
    }
}

fn server_live(_: Arc<Gateway>, _: tonic::Request<pb::Empty>, _: Ctx) -> BoxFuture<pb::ServerLiveResponse> {
    Box::pin(async { Ok(pb::ServerLiveResponse { live: true }) })
}

fn server_ready(gw: Arc<Gateway>, _: tonic::Request<pb::Empty>, _: Ctx) -> BoxFuture<pb::ServerReadyResponse> {
    Box::pin(async move { Ok(pb::ServerReadyResponse { ready: gw.ready.load(std::sync::atomic::Ordering::SeqCst) }) })
}

fn server_metadata(_: Arc<Gateway>, _: tonic::Request<pb::Empty>, _: Ctx) -> BoxFuture<pb::ServerMetadataResponse> {
    Box::pin(async {
        Ok(pb::ServerMetadataResponse {
            name: "citadel".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        })
    })
}

fn model_ready(gw: Arc<Gateway>, r: tonic::Request<pb::ModelRef>, ctx: Ctx) -> BoxFuture<pb::ModelReadyResponse> {
    Box::pin(async move {
        let (name, version) = (r.get_ref().name.clone(), r.get_ref().version.clone());
        gw.grpc_model(&r, &name, &version, &ctx).await?;
        Ok(pb::ModelReadyResponse { ready: true })
    })
}

fn model_metadata(gw: Arc<Gateway>, r: tonic::Request<pb::ModelRef>, ctx: Ctx) -> BoxFuture<pb::ModelMetadataResponse> {
    Box::pin(async move {
        let (name, version) = (r.get_ref().name.clone(), r.get_ref().version.clone());
        let (_, endpoint, version) = gw.grpc_model(&r, &name, &version, &ctx).await?;
        let meta = super::model_metadata(&endpoint, version);
        let tensors = |key: &str| -> Vec<pb::TensorMetadata> {
            meta[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| pb::TensorMetadata {
                    name: t["name"].as_str().unwrap_or_default().into(),
                    datatype: t["datatype"].as_str().unwrap_or_default().into(),
                    shape: t["shape"].as_array().into_iter().flatten().filter_map(|d| d.as_i64()).collect(),
                })
                .collect()
        };
        Ok(pb::ModelMetadataResponse {
            name: endpoint.name.clone(),
            versions: endpoint.targets.iter().map(|(t, _)| t.version.to_string()).collect(),
            platform: "onnx".into(),
            inputs: tensors("inputs"),
            outputs: tensors("outputs"),
        })
    })
}

fn model_infer(
    gw: Arc<Gateway>,
    r: tonic::Request<pb::ModelInferRequest>,
    ctx: Ctx,
) -> BoxFuture<pb::ModelInferResponse> {
    Box::pin(async move { gw.grpc_infer(r, &ctx).await })
}
