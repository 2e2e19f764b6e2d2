package admin

// uiRoutes are the pages of the web UI, in the one route table: each with
// the access rule of the API route whose operation it calls, so that the
// authorisation matrix covers them too. Reading is GET; every change is a
// POST form (browsers cannot send PUT, PATCH or DELETE without script).
func (h *Handler) uiRoutes() []route {
	return []route{
		{"GET", "/static/{file}", public, h.serveStatic},
		{"GET", "/{$}", anyPrincipal, h.uiHome},

		// Logging in and out.
		{"GET", "/login", public, h.uiLoginPage},
		{"POST", "/login", public, h.uiLogin},
		{"GET", "/user/login", public, h.uiUserLoginPage},
		{"POST", "/user/login", public, h.uiUserLogin},
		{"POST", "/logout", anySession, h.uiLogout},

		// The admin's own account and API tokens (sessions only).
		{"GET", "/account", adminSession, h.uiAccount},
		{"POST", "/account/password", adminSession, h.uiAccountPassword},
		{"POST", "/account/totp/secret", adminSession, h.uiTOTPSecret},
		{"POST", "/account/totp", adminSession, h.uiTOTPEnable},
		{"POST", "/account/totp/delete", adminSession, h.uiTOTPDisable},
		{"GET", "/tokens", adminSession, h.uiTokens},
		{"POST", "/tokens", adminSession, h.uiCreateToken},
		{"POST", "/tokens/{id}/delete", adminSession, h.uiDeleteToken},

		// Domains, with their usage.
		{"GET", "/domains", anyAdmin, h.uiDomains},
		{"GET", "/domains/new", superOnly, h.uiNewDomain},
		{"POST", "/domains", superOnly, h.uiCreateDomain},
		{"GET", "/domains/{domain}", anyAdmin, h.uiDomain},
		{"POST", "/domains/{domain}", anyAdmin, h.uiUpdateDomain},
		{"POST", "/domains/{domain}/delete", superOnly, h.uiDeleteDomain},

		// Alias domains.
		{"GET", "/alias-domains", anyAdmin, h.uiAliasDomains},
		{"POST", "/alias-domains", superOnly, h.uiCreateAliasDomain},
		{"POST", "/alias-domains/{name}", anyAdmin, h.uiUpdateAliasDomain},
		{"POST", "/alias-domains/{name}/delete", anyAdmin, h.uiDeleteAliasDomain},

		// Mailboxes, their vacation and app passwords.
		{"GET", "/mailboxes", anyAdmin, h.uiMailboxes},
		{"GET", "/mailboxes/new", anyAdmin, h.uiNewMailbox},
		{"POST", "/mailboxes", anyAdmin, h.uiCreateMailbox},
		{"GET", "/mailboxes/{address}", anyAdmin, h.uiMailbox},
		{"POST", "/mailboxes/{address}", anyAdmin, h.uiUpdateMailbox},
		{"POST", "/mailboxes/{address}/delete", anyAdmin, h.uiDeleteMailbox},
		{"GET", "/mailboxes/{address}/vacation", anyAdmin, h.uiVacation},
		{"POST", "/mailboxes/{address}/vacation", anyAdmin, h.uiPutVacation},
		{"POST", "/mailboxes/{address}/vacation/delete", anyAdmin, h.uiDeleteVacation},
		{"POST", "/mailboxes/{address}/app-passwords", anyAdmin, h.uiCreateAppPassword},
		{"POST", "/app-passwords/{id}/delete", anyAdmin, h.uiDeleteAppPassword},
		{"GET", "/vacations", anyAdmin, h.uiVacations},

		// Aliases.
		{"GET", "/aliases", anyAdmin, h.uiAliases},
		{"GET", "/aliases/new", anyAdmin, h.uiNewAlias},
		{"POST", "/aliases", anyAdmin, h.uiCreateAlias},
		{"GET", "/aliases/{address}", anyAdmin, h.uiAlias},
		{"POST", "/aliases/{address}", anyAdmin, h.uiUpdateAlias},
		{"POST", "/aliases/{address}/delete", anyAdmin, h.uiDeleteAlias},

		// Send-as grants.
		{"GET", "/sender-grants", anyAdmin, h.uiSenderGrants},
		{"POST", "/sender-grants", anyAdmin, h.uiCreateSenderGrant},
		{"POST", "/sender-grants/{id}/delete", anyAdmin, h.uiDeleteSenderGrant},

		// The audit log, the queue and the delivery log of the admin's
		// domains.
		{"GET", "/audit", anyAdmin, h.uiAudit},
		{"GET", "/queue", anyAdmin, h.uiQueue},
		{"POST", "/queue", anyAdmin, h.uiQueueAction},
		{"GET", "/queue/{id}", anyAdmin, h.uiQueueMessage},
		{"GET", "/log", anyAdmin, h.uiDeliveryLog},

		// CSV import (dry run first) and export.
		{"GET", "/csv", anyAdmin, h.uiCSV},
		{"POST", "/csv/mailboxes", anyAdmin, h.uiImportMailboxes},
		{"POST", "/csv/aliases", anyAdmin, h.uiImportAliases},

		// Admins and their domains: a superadmin's.
		{"GET", "/admins", superOnly, h.uiAdmins},
		{"GET", "/admins/new", superOnly, h.uiNewAdmin},
		{"POST", "/admins", superOnly, h.uiCreateAdmin},
		{"GET", "/admins/{username}", superOnly, h.uiAdmin},
		{"POST", "/admins/{username}", superOnly, h.uiUpdateAdmin},
		{"POST", "/admins/{username}/delete", superOnly, h.uiDeleteAdmin},
		{"POST", "/admins/{username}/domains", superOnly, h.uiGrantDomain},
		{"POST", "/admins/{username}/domains/{domain}/delete", superOnly, h.uiRevokeDomain},

		// Mailbox self-service.
		{"GET", "/user", mailboxSession, h.uiSelf},
		{"POST", "/user/password", mailboxSession, h.uiSelfPassword},
		{"GET", "/user/vacation", mailboxSession, h.uiSelfVacation},
		{"POST", "/user/vacation", mailboxSession, h.uiSelfPutVacation},
		{"POST", "/user/vacation/delete", mailboxSession, h.uiSelfDeleteVacation},
		{"GET", "/user/forwarding", mailboxSession, h.uiSelfForwarding},
		{"POST", "/user/forwarding", mailboxSession, h.uiSelfPutForwarding},
		{"POST", "/user/forwarding/delete", mailboxSession, h.uiSelfDeleteForwarding},
		{"GET", "/user/app-passwords", mailboxSession, h.uiSelfAppPasswords},
		{"POST", "/user/app-passwords", mailboxSession, h.uiSelfCreateAppPassword},
		{"POST", "/user/app-passwords/{id}/delete", mailboxSession, h.uiSelfDeleteAppPassword},
	}
}
