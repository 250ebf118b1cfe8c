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
}
