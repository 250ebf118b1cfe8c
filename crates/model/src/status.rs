//! Lifecycle statuses of the resources this model knows.

/// A cluster is ACTIVE until deleted, then INACTIVE (still describable, as in ECS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterStatus {
    Active,
    Inactive,
}

impl ClusterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Active => "ACTIVE",
            ClusterStatus::Inactive => "INACTIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(ClusterStatus::Active),
            "INACTIVE" => Some(ClusterStatus::Inactive),
            _ => None,
        }
    }
}

/// A task-definition revision moves ACTIVE → INACTIVE (deregistered) → DELETE_IN_PROGRESS
/// (DeleteTaskDefinitions); it never moves back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskDefinitionStatus {
    Active,
    Inactive,
    DeleteInProgress,
}

impl TaskDefinitionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskDefinitionStatus::Active => "ACTIVE",
            TaskDefinitionStatus::Inactive => "INACTIVE",
            TaskDefinitionStatus::DeleteInProgress => "DELETE_IN_PROGRESS",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(TaskDefinitionStatus::Active),
            "INACTIVE" => Some(TaskDefinitionStatus::Inactive),
            "DELETE_IN_PROGRESS" => Some(TaskDefinitionStatus::DeleteInProgress),
            _ => None,
        }
    }

    /// Statuses only move forward.
    pub fn can_become(self, next: TaskDefinitionStatus) -> bool {
        next > self
    }
}

/// A task's status, in the order ECS moves it. `lastStatus` (what the agent observed) only
/// moves forward; `desiredStatus` is RUNNING or STOPPED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Provisioning,
        TaskStatus::Pending,
        TaskStatus::Activating,
        TaskStatus::Running,
        TaskStatus::Deactivating,
        TaskStatus::Stopping,
        TaskStatus::Deprovisioning,
        TaskStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Progress only moves forward; a repeated report of the same status changes nothing.
    pub fn can_become(self, next: TaskStatus) -> bool {
        next > self
    }
}

/// A container instance is ACTIVE, DRAINING (no new tasks; service tasks move away), or
/// INACTIVE once deregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    Active,
    Draining,
    Inactive,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Active => "ACTIVE",
            InstanceStatus::Draining => "DRAINING",
            InstanceStatus::Inactive => "INACTIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(InstanceStatus::Active),
            "DRAINING" => Some(InstanceStatus::Draining),
            "INACTIVE" => Some(InstanceStatus::Inactive),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definition_status_moves_forward_only() {
        use TaskDefinitionStatus::*;
        assert!(Active.can_become(Inactive));
        assert!(Inactive.can_become(DeleteInProgress));
        assert!(Active.can_become(DeleteInProgress));
        assert!(!Inactive.can_become(Active));
        assert!(!Inactive.can_become(Inactive));
        for s in [Active, Inactive, DeleteInProgress] {
            assert_eq!(TaskDefinitionStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn task_status_moves_forward_only() {
        use TaskStatus::*;
        assert!(Pending.can_become(Running));
        assert!(Running.can_become(Stopped));
        assert!(Pending.can_become(Stopped));
        assert!(!Running.can_become(Pending));
        assert!(!Stopped.can_become(Running));
        assert!(!Running.can_become(Running));
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("running"), None);
    }
}
