//! Every route of the API and who may call it: the one table both the router
//! (`api::app`) and the authorization matrix test read, so a route cannot exist without a
//! scope, nor without a row in that test.

/// Who may call a route. Which data a caller then sees is narrowed by the handler (an app
/// sees its own events and deliveries; a tenant reader its tenant's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No key needed.
    Public,
    /// The admin key only.
    Admin,
    /// An app's key: the key decides the app, so not the admin key (it belongs to no app).
    App,
    /// The admin key or an app's key; not a tenant reader's.
    AdminOrApp,
    /// Any key: the admin, an app (what it published or received), a tenant reader (its
    /// tenant only).
    Read,
}

/// One route: its method, its path pattern (axum syntax) and its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub scope: Scope,
}

const fn route(method: &'static str, path: &'static str, scope: Scope) -> Route {
    Route {
        method,
        path,
        scope,
    }
}

/// Every route the server answers (anything else is a 404).
pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", Scope::Public),
    route("GET", "/metrics", Scope::Public),
    route("POST", "/v1/apps", Scope::Admin),
    route("GET", "/v1/apps", Scope::Admin),
    route("PATCH", "/v1/apps/{id}", Scope::Admin),
    route("POST", "/v1/apps/{id}/keys", Scope::Admin),
    route("GET", "/v1/apps/{id}/keys", Scope::Admin),
    route("DELETE", "/v1/apps/{id}/keys/{key_id}", Scope::Admin),
    route("POST", "/v1/tenants/{tenant}/readers", Scope::Admin),
    route("GET", "/v1/tenants/{tenant}/readers", Scope::Admin),
    route(
        "DELETE",
        "/v1/tenants/{tenant}/readers/{key_id}",
        Scope::Admin,
    ),
    route("POST", "/v1/events", Scope::App),
    route("GET", "/v1/events", Scope::Read),
    route("GET", "/v1/events/{id}", Scope::Read),
    route("POST", "/v1/consume", Scope::App),
    route("POST", "/v1/ack", Scope::App),
    route("POST", "/v1/nack", Scope::App),
    route("POST", "/v1/deliveries/{id}/extend", Scope::App),
    route("GET", "/v1/dead-letters", Scope::Read),
    route("POST", "/v1/dead-letters/requeue", Scope::AdminOrApp),
    route("GET", "/v1/tenants/{tenant}/unacknowledged", Scope::Read),
    route("GET", "/v1/tenants/{tenant}/matrix", Scope::Read),
    route("GET", "/v1/tenants/{tenant}/health", Scope::Read),
    route("GET", "/v1/matrix", Scope::Admin),
    route("GET", "/v1/stats", Scope::Read),
    route("GET", "/v1/stream", Scope::AdminOrApp),
];
