//! `POST /api/v1/rules/{validate,explain,preview}`: CEL targeting for
//! engineers. A body gives either one `expression` (checked as a target) or a
//! whole rule set (`target` plus ordered `rules`).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use ota_auth::Role;
use ota_common::{CodedError, ErrorBody};
use ota_proto::v1 as pb;
use ota_rule_engine::{Explanation, ExpressionError, Preview, RuleSet};
use serde::{Deserialize, Serialize};

use crate::model::RuleProblems;
use crate::{Caller, RestError, RestState};

/// Either `expression`, or `target` with optional `rules`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesBody {
    /// Shorthand for a rule set with only this target.
    expression: Option<String>,
    target: Option<String>,
    /// In order: the first that matches gives its action.
    #[serde(default)]
    rules: Vec<ota_rule_engine::Rule>,
    /// Explain only: the vehicle.
    vin: Option<String>,
    /// Preview only: how many matching VINs to list.
    sample_size: Option<u32>,
}

impl RulesBody {
    fn rule_set(&self) -> Result<RuleSet, RestError> {
        match (&self.expression, &self.target) {
            (Some(e), None) if self.rules.is_empty() => Ok(RuleSet {
                target: e.clone(),
                rules: Vec::new(),
            }),
            (None, Some(t)) => Ok(RuleSet {
                target: t.clone(),
                rules: self.rules.clone(),
            }),
            _ => Err(RestError::Invalid(
                "give either \"expression\" or \"target\" (with optional \"rules\")".into(),
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Validation {
    pub valid: bool,
    pub errors: Vec<ExpressionError>,
}

type Body = Result<Json<RulesBody>, axum::extract::rejection::JsonRejection>;

async fn check(s: &RestState, rules: &RuleSet) -> Result<Validation, RestError> {
    let r = s
        .rules
        .clone()
        .validate(pb::ValidateRequest {
            rules: Some(rules.clone().into()),
        })
        .await?
        .into_inner();
    Ok(Validation {
        valid: r.valid,
        errors: r.errors.into_iter().map(Into::into).collect(),
    })
}

/// The rule set, if it validates; otherwise a 400 listing every error.
async fn require_valid(s: &RestState, rules: RuleSet) -> Result<RuleSet, RestError> {
    let v = check(s, &rules).await?;
    if v.valid {
        Ok(rules)
    } else {
        Err(RestError::InvalidRules(v.errors))
    }
}

/// Validate CEL rules (viewer)
#[utoipa::path(
    post,
    path = "/api/v1/rules/validate",
    tag = "rules",
    operation_id = "validate_rules",
    request_body = RulesBody,
    responses(
        (status = 200, description = "Valid, or every positioned error", body = Validation),
        (status = 400, description = "A body that is not a rules request", body = ErrorBody),
    ),
)]
pub async fn validate(
    caller: Caller,
    State(s): State<RestState>,
    body: Body,
) -> Result<Response, RestError> {
    caller.require(Role::Viewer)?;
    let Json(body) = body?;
    let v = check(&s, &body.rule_set()?).await?;
    Ok(Json(v).into_response())
}

/// Explain the evaluation for one vehicle (viewer)
#[utoipa::path(
    post,
    path = "/api/v1/rules/explain",
    tag = "rules",
    operation_id = "explain_rules",
    request_body = RulesBody,
    responses(
        (status = 200, description = "The value of every sub-expression and which rule won", body = Explanation),
        (status = 400, description = "Invalid rules (`errors` lists every positioned error), or no `vin`", body = RuleProblems),
        (status = 404, description = "No such vehicle", body = ErrorBody),
    ),
)]
pub async fn explain(
    caller: Caller,
    State(s): State<RestState>,
    body: Body,
) -> Result<Response, RestError> {
    caller.require(Role::Viewer)?;
    let Json(body) = body?;
    let vin = body
        .vin
        .clone()
        .ok_or_else(|| RestError::Invalid("explain needs a \"vin\"".into()))?;
    let rules = require_valid(&s, body.rule_set()?).await?;
    let r = s
        .rules
        .clone()
        .explain(pb::ExplainRequest {
            rules: Some(rules.into()),
            vin,
        })
        .await?
        .into_inner();
    Ok(Json(Explanation::from(r)).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Stream NDJSON: `{"scanned","total"}` lines, then `{"result": ...}`
    /// (or `{"error": {"code","message"}}` when the scan fails).
    #[serde(default)]
    progress: bool,
}

/// Count and break down matches over the inventory (engineer)
#[utoipa::path(
    post,
    path = "/api/v1/rules/preview",
    tag = "rules",
    operation_id = "preview_rules",
    params(PreviewQuery),
    request_body = RulesBody,
    responses(
        (status = 200, description = "Scanned, matched and failed vehicles, counts by model, platform, gateway, region and rule, sample VINs; with `progress`, NDJSON progress lines ending in the result",
            content(
                (Preview = "application/json"),
                (String = "application/x-ndjson"),
            ),
        ),
        (status = 400, description = "Invalid rules (`errors` lists every positioned error), or an unknown parameter", body = RuleProblems),
        (status = 403, description = "The caller's role is below engineer", body = ErrorBody),
    ),
)]
pub async fn preview(
    caller: Caller,
    State(s): State<RestState>,
    query: Result<Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, RestError> {
    // A preview scans the whole inventory: an engineer's tool.
    caller.require(Role::Engineer)?;
    let Query(q) = query.map_err(|e| RestError::Invalid(e.body_text().to_lowercase()))?;
    let Json(body) = body?;
    let rules = require_valid(&s, body.rule_set()?).await?;
    let req = pb::PreviewRequest {
        rules: Some(rules.into()),
        sample_size: body.sample_size.unwrap_or(0),
    };
    if !q.progress {
        let r = s.rules.clone().preview(req).await?.into_inner();
        return Ok(Json(Preview::from(r)).into_response());
    }
    let stream = s.rules.clone().preview_stream(req).await?.into_inner();
    let lines = stream.map(|m| {
        let line = match m {
            Ok(pb::PreviewProgress {
                result: Some(r), ..
            }) => {
                serde_json::json!({"result": Preview::from(r)})
            }
            Ok(p) => serde_json::json!({"scanned": p.scanned, "total": p.total}),
            Err(status) => {
                let e = RestError::Upstream(status);
                serde_json::json!({"error": {"code": e.code().as_str(), "message": e.to_string()}})
            }
        };
        Ok::<_, std::convert::Infallible>(format!("{line}\n"))
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}
