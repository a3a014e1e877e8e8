//! The `ota.v1.CampaignManager` gRPC service over a [`CampaignManager`].

use ota_common::vehicle::to_timestamp;
use ota_common::Vin;
use ota_proto::v1 as pb;
use pb::campaign_manager_server::CampaignManager as CampaignManagerRpc;
use tonic::{Request, Response, Status};

use crate::manager::{Actor, CampaignManager};
use crate::model::{
    ActionState, Campaign, CampaignState, Package, RolloutError, Transition, UnreadableCampaign,
};
use crate::spec::SpecError;
use crate::status::StatusReport;
use crate::store::{AuditEntry, CampaignEntry};
use crate::CampaignError;

/// Vehicles per streamed report page.
const ROWS_PER_MESSAGE: u32 = 1000;
/// Most VINs one OpenActions call may ask for.
const MAX_OPEN_ACTIONS_VINS: usize = 10_000;

pub struct CampaignManagerService {
    manager: CampaignManager,
}

impl CampaignManagerService {
    pub fn new(manager: CampaignManager) -> Self {
        Self { manager }
    }

    pub fn into_server(self) -> pb::campaign_manager_server::CampaignManagerServer<Self> {
        pb::campaign_manager_server::CampaignManagerServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    async fn transition(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
        t: Transition,
    ) -> Result<Response<pb::Campaign>, Status> {
        let r = req.into_inner();
        let actor = actor(&r.actor, &r.actor_role);
        let c = self.manager.transition(&r.id, t, &actor, &r.reason).await?;
        Ok(Response::new(c.into()))
    }
}

fn actor(name: &str, role: &str) -> Actor {
    Actor {
        name: if name.is_empty() { "anonymous" } else { name }.to_string(),
        role: role.to_string(),
    }
}

impl From<Campaign> for pb::Campaign {
    fn from(c: Campaign) -> Self {
        let (last_error, last_error_at) = RolloutError::shown(c.rollout_error.as_ref());
        pb::Campaign {
            waves: c.waves().to_vec(),
            target: c.plan.spec.target.clone(),
            id: c.id,
            name: c.name,
            state: c.state.into(),
            spec: c.spec_text,
            created_by: c.created_by,
            approved_by: c.approved_by.unwrap_or_default(),
            priority: c.priority,
            created_at: Some(to_timestamp(c.created_at)),
            updated_at: Some(to_timestamp(c.updated_at)),
            state_reason: c.state_reason,
            current_wave: c.current_wave,
            launched_at: c.launched_at.map(to_timestamp),
            wave_opened_at: c.wave_opened_at.map(to_timestamp),
            last_error,
            last_error_at,
            failed_ticks: c.rollout_error.map_or(0, |e| e.failed_ticks),
        }
    }
}

/// What can be shown of a campaign that cannot be read: its record, and as
/// its error why it cannot be read (the rollout's own, once it has tried).
impl From<UnreadableCampaign> for pb::Campaign {
    fn from(c: UnreadableCampaign) -> Self {
        let problem = c.error().to_string();
        let (last_error, last_error_at, failed_ticks) = match c.rollout_error {
            Some(e) => (e.message, Some(to_timestamp(e.at)), e.failed_ticks),
            None => (problem, None, 0),
        };
        pb::Campaign {
            id: c.id,
            name: c.name,
            // A stored state this version cannot read goes out unspecified;
            // the error says what it is.
            state: c.state.parse().unwrap_or(CampaignState::Unspecified).into(),
            spec: c.spec_text,
            created_by: c.created_by,
            approved_by: c.approved_by.unwrap_or_default(),
            priority: c.priority,
            created_at: Some(to_timestamp(c.created_at)),
            updated_at: Some(to_timestamp(c.updated_at)),
            state_reason: c.state_reason,
            current_wave: c.current_wave,
            waves: Vec::new(),
            launched_at: c.launched_at.map(to_timestamp),
            wave_opened_at: c.wave_opened_at.map(to_timestamp),
            target: String::new(),
            last_error,
            last_error_at,
            failed_ticks,
        }
    }
}

fn entry_pb(e: CampaignEntry) -> pb::Campaign {
    match e {
        CampaignEntry::Readable(c) => (*c).into(),
        CampaignEntry::Unreadable(u) => (*u).into(),
    }
}

impl From<Package> for pb::Package {
    fn from(p: Package) -> Self {
        pb::Package {
            id: p.id,
            name: p.name,
            version: p.version,
            ecu: p.ecu,
            compatible_hw: p.compatible_hw,
            artifacts: p
                .artifacts
                .into_iter()
                .map(|a| pb::Artifact {
                    url: a.url,
                    sha256: a.sha256,
                    size: a.size,
                })
                .collect(),
            release_notes: p.release_notes,
            in_use: p.in_use,
            created_at: Some(to_timestamp(p.created_at)),
            created_by: p.created_by,
        }
    }
}

impl From<SpecError> for pb::SpecError {
    fn from(e: SpecError) -> Self {
        pb::SpecError {
            path: e.path,
            message: e.message,
            position: e.line.map(|line| pb::SourcePosition {
                line,
                column: e.column.unwrap_or(0),
            }),
        }
    }
}

impl From<AuditEntry> for pb::AuditEntry {
    fn from(e: AuditEntry) -> Self {
        pb::AuditEntry {
            id: e.id as u64,
            at: Some(to_timestamp(e.at)),
            actor: e.actor,
            entity: e.entity,
            entity_id: e.entity_id,
            action: e.action,
            reason: e.reason,
            detail: e.detail,
        }
    }
}

type RowStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::ReportVehiclesResponse, Status>> + Send>,
>;
type OpenStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::OpenActionsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CampaignManagerRpc for CampaignManagerService {
    async fn create_package(
        &self,
        req: Request<pb::CreatePackageRequest>,
    ) -> Result<Response<pb::Package>, Status> {
        let r = req.into_inner();
        let p = r
            .package
            .ok_or_else(|| Status::invalid_argument("package is required"))?;
        let p = self.manager.create_package(p, &r.actor).await?;
        Ok(Response::new(p.into()))
    }

    async fn get_package(
        &self,
        req: Request<pb::GetPackageRequest>,
    ) -> Result<Response<pb::Package>, Status> {
        let p = self
            .manager
            .store()
            .get_package(&req.into_inner().id)
            .await?;
        Ok(Response::new(p.into()))
    }

    async fn list_packages(
        &self,
        req: Request<pb::ListPackagesRequest>,
    ) -> Result<Response<pb::ListPackagesResponse>, Status> {
        let name = req.into_inner().name;
        let packages = self
            .manager
            .store()
            .list_packages((!name.is_empty()).then_some(name.as_str()))
            .await?;
        Ok(Response::new(pb::ListPackagesResponse {
            packages: packages.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_campaign(
        &self,
        req: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::CreateCampaignResponse>, Status> {
        let r = req.into_inner();
        let resp = match self.manager.create_campaign(&r.spec, &r.actor).await? {
            Ok(c) => pb::CreateCampaignResponse {
                campaign: Some(c.into()),
                errors: Vec::new(),
            },
            Err(errors) => pb::CreateCampaignResponse {
                campaign: None,
                errors: errors.into_iter().map(Into::into).collect(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn validate_campaign(
        &self,
        req: Request<pb::ValidateCampaignRequest>,
    ) -> Result<Response<pb::ValidateCampaignResponse>, Status> {
        let errors = match self.manager.validate(&req.into_inner().spec).await? {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(Into::into).collect(),
        };
        Ok(Response::new(pb::ValidateCampaignResponse { errors }))
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let id = req.into_inner().id;
        let entry = self.manager.store().get_campaign_entry(&id).await?;
        Ok(Response::new(entry_pb(entry)))
    }

    async fn list_campaigns(
        &self,
        req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let state = req.into_inner().state;
        let states: Vec<CampaignState> = match CampaignState::try_from(state) {
            Ok(CampaignState::Unspecified) => Vec::new(),
            Ok(s) => vec![s],
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown campaign state {state}"
                )))
            }
        };
        let campaigns = self.manager.store().list_campaign_entries(&states).await?;
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: campaigns.into_iter().map(entry_pb).collect(),
        }))
    }

    async fn set_priority(
        &self,
        req: Request<pb::SetPriorityRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let r = req.into_inner();
        let c = self
            .manager
            .set_priority(&r.id, r.priority, &actor(&r.actor, ""), &r.reason)
            .await?;
        Ok(Response::new(c.into()))
    }

    async fn approve(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Transition::Approve).await
    }

    async fn launch(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Transition::Launch).await
    }

    async fn pause(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Transition::Pause).await
    }

    async fn resume(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Transition::Resume).await
    }

    async fn abort(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Transition::Abort).await
    }

    async fn cancel(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.transition(req, Transition::Cancel).await
    }

    async fn advance(
        &self,
        req: Request<pb::CampaignTransitionRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let r = req.into_inner();
        let c = self
            .manager
            .advance(&r.id, &actor(&r.actor, &r.actor_role), &r.reason)
            .await?;
        Ok(Response::new(c.into()))
    }

    async fn report_status(
        &self,
        req: Request<pb::ReportStatusRequest>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        let r = req.into_inner();
        let protocol = if r.protocol.is_empty() {
            "grpc".to_string()
        } else {
            r.protocol
        };
        // Refused before it reaches the writer, which counts the others.
        let reported = ActionState::reported(r.state);
        let reject = |status: Status| {
            let state = reported.as_ref().map_or("unknown", |s| s.as_str());
            crate::status::count_report(&protocol, state, "invalid");
            status
        };
        Vin::parse(&r.vin).map_err(|e| reject(Status::invalid_argument(e.to_string())))?;
        let state = reported
            .clone()
            .map_err(|e| reject(Status::invalid_argument(e)))?;
        if r.progress > 100 {
            return Err(reject(Status::invalid_argument(format!(
                "progress {} is above 100",
                r.progress
            ))));
        }
        let result = self
            .manager
            .report_status(StatusReport {
                vin: r.vin,
                action_id: r.action_id,
                state,
                progress: r.progress,
                message: r.message,
                seq: r.seq,
                protocol: protocol.clone(),
            })
            .await?;
        Ok(Response::new(pb::ReportStatusResponse {
            applied: result.applied,
            state: result.state.into(),
        }))
    }

    async fn mark_delivered(
        &self,
        req: Request<pb::MarkDeliveredRequest>,
    ) -> Result<Response<pb::MarkDeliveredResponse>, Status> {
        let r = req.into_inner();
        let updated = self
            .manager
            .store()
            .mark_delivered(&r.vin, &r.action_ids, chrono::Utc::now())
            .await?;
        Ok(Response::new(pb::MarkDeliveredResponse { updated }))
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::CampaignReport>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.manager.report(&r.id, r.top_failures).await?,
        ))
    }

    async fn report_vehicles(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<RowStream>, Status> {
        let id = req.into_inner().id;
        // Unknown ids fail the call itself, not the first message.
        self.manager.campaign(&id).await?;
        let manager = self.manager.clone();
        let stream = async_stream_rows(manager, id);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000),
        };
        let entries = self
            .manager
            .store()
            .list_audit(
                (!r.entity_id.is_empty()).then_some(r.entity_id.as_str()),
                // Ids are positive i64: a larger bound means "all of them".
                (r.before > 0).then(|| i64::try_from(r.before).unwrap_or(i64::MAX)),
                limit,
            )
            .await?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn failure_groups(
        &self,
        req: Request<pb::FailureGroupsRequest>,
    ) -> Result<Response<pb::FailureGroupsResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.manager.failure_groups(&r.campaign_id, r.limit).await?,
        ))
    }

    async fn failure_group_vins(
        &self,
        req: Request<pb::FailureGroupVinsRequest>,
    ) -> Result<Response<pb::FailureGroupVinsResponse>, Status> {
        let r = req.into_inner();
        let vins = self
            .manager
            .failure_group_vins(&r.campaign_id, &r.reason, &r.after_vin, r.limit)
            .await?;
        Ok(Response::new(pb::FailureGroupVinsResponse { vins }))
    }

    async fn retry_group(
        &self,
        req: Request<pb::RetryGroupRequest>,
    ) -> Result<Response<pb::RetryGroupResponse>, Status> {
        let r = req.into_inner();
        let (retried, skipped) = self
            .manager
            .retry_group(&r.campaign_id, &r.reason, &actor(&r.actor, &r.actor_role))
            .await?;
        Ok(Response::new(pb::RetryGroupResponse { retried, skipped }))
    }

    async fn vehicle_actions(
        &self,
        req: Request<pb::VehicleActionsRequest>,
    ) -> Result<Response<pb::VehicleActionsResponse>, Status> {
        let actions = self.manager.vehicle_history(&req.into_inner().vin).await?;
        Ok(Response::new(pb::VehicleActionsResponse { actions }))
    }

    async fn open_actions(
        &self,
        req: Request<pb::OpenActionsRequest>,
    ) -> Result<Response<pb::OpenActionsResponse>, Status> {
        let vins = req.into_inner().vins;
        if vins.len() > MAX_OPEN_ACTIONS_VINS {
            return Err(CampaignError::Invalid(format!(
                "{} VINs asked for at once; at most {MAX_OPEN_ACTIONS_VINS}",
                vins.len()
            ))
            .into());
        }
        let rows = self.manager.store().open_actions(&vins).await?;
        let vehicles = self.manager.vehicle_actions(rows).await?;
        Ok(Response::new(pb::OpenActionsResponse { vehicles }))
    }

    async fn scan_open_actions(
        &self,
        req: Request<pb::ScanOpenActionsRequest>,
    ) -> Result<Response<OpenStream>, Status> {
        let r = req.into_inner();
        let batch = match r.batch_size {
            0 => 2000,
            n => n.min(10_000),
        };
        let manager = self.manager.clone();
        let stream = futures::stream::try_unfold(
            (manager, r.after_vin, false),
            move |(manager, after, done)| async move {
                if done {
                    return Ok(None);
                }
                let rows = manager.store().scan_open_actions(&after, batch).await?;
                let Some(last) = rows.last().map(|r| r.vin.clone()) else {
                    return Ok(None);
                };
                let vehicles = manager.vehicle_actions(rows).await?;
                Ok::<_, Status>(Some((
                    pb::OpenActionsResponse { vehicles },
                    (manager, last, false),
                )))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

fn async_stream_rows(
    manager: CampaignManager,
    id: String,
) -> impl futures::Stream<Item = Result<pb::ReportVehiclesResponse, Status>> + Send {
    futures::stream::try_unfold(
        (manager, id, String::new()),
        |(manager, id, after)| async move {
            let rows = manager.report_rows(&id, &after, ROWS_PER_MESSAGE).await?;
            let Some(last) = rows.last().map(|r| r.vin.clone()) else {
                return Ok(None);
            };
            Ok::<_, Status>(Some((
                pb::ReportVehiclesResponse { rows },
                (manager, id, last),
            )))
        },
    )
}
