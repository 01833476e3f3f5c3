//! What a caller may grant through the administrative doors: never more than
//! it holds. A credential narrowed to `manage_users` may manage accounts, but
//! not make (or act on) an account more powerful than itself, and a
//! model-restricted key may not lift model restrictions.

use crate::domain::{AuditAction, ModelList, Principal, Role, User};

use super::{AccountError, Accounts, Acting};

impl Accounts {
    /// May `by` create an account with `role`, or change `target` (its role
    /// to `new_role`)? The operator may; a caller must hold every permission
    /// of the account's role, before and after.
    pub async fn may_manage_user(
        &self,
        by: &Acting<'_>,
        target: Option<&User>,
        new_role: Option<Role>,
    ) -> Result<(), AccountError> {
        let Some(caller) = by.principal() else { return Ok(()) };
        for role in target.map(|t| t.role).into_iter().chain(new_role) {
            let missing = self.roles.of(role).difference(caller.permissions);
            if !missing.is_empty() {
                let refused = format!(
                    "cannot manage an account with the {role} role: the caller lacks {missing} (a credential never grants \
                     more than it holds)"
                );
                let subject = target.map_or_else(|| "users".to_owned(), |t| format!("user:{}", t.id));
                self.audit.record(by.event(AuditAction::AdminDenied, subject, refused.clone())).await;
                return Err(AccountError::Forbidden(refused));
            }
        }
        Ok(())
    }

    /// May `by` set a model list to `models` (`None`: any model)? A caller
    /// held to a list of its own (a model-restricted key) may only set lists
    /// within it.
    pub async fn may_set_models(
        &self,
        by: &Acting<'_>,
        subject: &str,
        models: Option<&ModelList>,
    ) -> Result<(), AccountError> {
        let Some(caller) = by.principal() else { return Ok(()) };
        if within(caller, models) {
            return Ok(());
        }
        let refused = "cannot allow models the calling key may not use".to_owned();
        self.audit.record(by.event(AuditAction::AdminDenied, subject.to_owned(), refused.clone())).await;
        Err(AccountError::Forbidden(refused))
    }
}

fn within(caller: &Principal, models: Option<&ModelList>) -> bool {
    let Some(held) = &caller.models else { return true };
    let Some(models) = models else { return false };
    models.names().iter().all(|m| if m.contains('*') { held.names().contains(m) } else { held.allows(m) })
}
