package admin

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// handlerFunc serves one route for an authenticated principal (nil on
// public routes). A returned error is written as the error body.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *principal) error

// route is one entry of the route table: the table registers the routes
// and is what the authorisation matrix and OpenAPI tests enumerate, so no
// route exists without an access rule.
type route struct {
	method  string // GET, POST, PUT, PATCH, DELETE
	pattern string // a net/http pattern path: /api/v1/mailboxes/{address}
	access  access
	handle  handlerFunc
}

func (rt route) key() string { return rt.method + " " + rt.pattern }

// apiPrefix starts every route documented in openapi.json.
const apiPrefix = "/api/v1/"

// routeTable lists every route of the service. Rules, in short: reading is
// GET and never changes state; a domain admin's routes are anyAdmin and
// scope what they touch (scope.go); what only a superadmin may do is
// superOnly, whatever the object.
func (h *Handler) routeTable() []route {
	return append([]route{
		// Health and documentation.
		{"GET", "/healthz", public, h.healthz},
		{"GET", "/readyz", public, h.readyz},
		{"GET", "/api/v1/openapi.json", public, h.apiOpenAPI},

		// Sessions.
		{"POST", "/api/v1/login", public, h.apiLogin},
		{"POST", "/api/v1/self/login", public, h.apiSelfLogin},
		{"POST", "/api/v1/logout", anySession, h.apiLogout},
		{"GET", "/api/v1/whoami", anyPrincipal, h.apiWhoami},

		// The admin's own account.
		{"PUT", "/api/v1/account/password", adminSession, h.apiAccountPassword},
		{"POST", "/api/v1/account/totp/secret", adminSession, h.apiTOTPSecret},
		{"PUT", "/api/v1/account/totp", adminSession, h.apiTOTPEnable},
		{"DELETE", "/api/v1/account/totp", adminSession, h.apiTOTPDisable},

		// API tokens: an admin's own (a superadmin's: everyone's).
		{"GET", "/api/v1/tokens", adminSession, h.apiListTokens},
		{"POST", "/api/v1/tokens", adminSession, h.apiCreateToken},
		{"GET", "/api/v1/tokens/{id}", adminSession, h.apiGetToken},
		{"PATCH", "/api/v1/tokens/{id}", adminSession, h.apiUpdateToken},
		{"DELETE", "/api/v1/tokens/{id}", adminSession, h.apiDeleteToken},

		// Domains: domain admins read theirs and change their description and
		// active flag; the rest is a superadmin's.
		{"GET", "/api/v1/domains", anyAdmin, h.apiListDomains},
		{"POST", "/api/v1/domains", superOnly, h.apiCreateDomain},
		{"GET", "/api/v1/domains/{domain}", anyAdmin, h.apiGetDomain},
		{"PATCH", "/api/v1/domains/{domain}", anyAdmin, h.apiUpdateDomain},
		{"DELETE", "/api/v1/domains/{domain}", superOnly, h.apiDeleteDomain},

		// Alias domains: creating one claims a name no grant covers, so only
		// a superadmin may; a domain admin manages those of its domains.
		{"GET", "/api/v1/alias-domains", anyAdmin, h.apiListAliasDomains},
		{"POST", "/api/v1/alias-domains", superOnly, h.apiCreateAliasDomain},
		{"GET", "/api/v1/alias-domains/{name}", anyAdmin, h.apiGetAliasDomain},
		{"PATCH", "/api/v1/alias-domains/{name}", anyAdmin, h.apiUpdateAliasDomain},
		{"DELETE", "/api/v1/alias-domains/{name}", anyAdmin, h.apiDeleteAliasDomain},

		// Mailboxes and their vacation.
		{"GET", "/api/v1/mailboxes", anyAdmin, h.apiListMailboxes},
		{"POST", "/api/v1/mailboxes", anyAdmin, h.apiCreateMailbox},
		{"GET", "/api/v1/mailboxes/{address}", anyAdmin, h.apiGetMailbox},
		{"PATCH", "/api/v1/mailboxes/{address}", anyAdmin, h.apiUpdateMailbox},
		{"DELETE", "/api/v1/mailboxes/{address}", anyAdmin, h.apiDeleteMailbox},
		{"GET", "/api/v1/mailboxes/{address}/vacation", anyAdmin, h.apiGetVacation},
		{"PUT", "/api/v1/mailboxes/{address}/vacation", anyAdmin, h.apiPutVacation},
		{"DELETE", "/api/v1/mailboxes/{address}/vacation", anyAdmin, h.apiDeleteVacation},
		{"GET", "/api/v1/vacations", anyAdmin, h.apiListVacations},

		// Aliases.
		{"GET", "/api/v1/aliases", anyAdmin, h.apiListAliases},
		{"POST", "/api/v1/aliases", anyAdmin, h.apiCreateAlias},
		{"GET", "/api/v1/aliases/{address}", anyAdmin, h.apiGetAlias},
		{"PATCH", "/api/v1/aliases/{address}", anyAdmin, h.apiUpdateAlias},
		{"DELETE", "/api/v1/aliases/{address}", anyAdmin, h.apiDeleteAlias},

		// Send-as grants.
		{"GET", "/api/v1/sender-grants", anyAdmin, h.apiListSenderGrants},
		{"POST", "/api/v1/sender-grants", anyAdmin, h.apiCreateSenderGrant},
		{"GET", "/api/v1/sender-grants/{id}", anyAdmin, h.apiGetSenderGrant},
		{"PATCH", "/api/v1/sender-grants/{id}", anyAdmin, h.apiUpdateSenderGrant},
		{"DELETE", "/api/v1/sender-grants/{id}", anyAdmin, h.apiDeleteSenderGrant},

		// App passwords of the mailboxes an admin manages.
		{"GET", "/api/v1/app-passwords", anyAdmin, h.apiListAppPasswords},
		{"POST", "/api/v1/app-passwords", anyAdmin, h.apiCreateAppPassword},
		{"GET", "/api/v1/app-passwords/{id}", anyAdmin, h.apiGetAppPassword},
		{"PATCH", "/api/v1/app-passwords/{id}", anyAdmin, h.apiUpdateAppPassword},
		{"DELETE", "/api/v1/app-passwords/{id}", anyAdmin, h.apiDeleteAppPassword},

		// Admins and their domains: a superadmin's.
		{"GET", "/api/v1/admins", superOnly, h.apiListAdmins},
		{"POST", "/api/v1/admins", superOnly, h.apiCreateAdmin},
		{"GET", "/api/v1/admins/{username}", superOnly, h.apiGetAdmin},
		{"PATCH", "/api/v1/admins/{username}", superOnly, h.apiUpdateAdmin},
		{"DELETE", "/api/v1/admins/{username}", superOnly, h.apiDeleteAdmin},
		{"GET", "/api/v1/domain-admins", superOnly, h.apiListDomainAdmins},
		{"POST", "/api/v1/domain-admins", superOnly, h.apiCreateDomainAdmin},
		{"PATCH", "/api/v1/domain-admins/{username}/{domain}", superOnly, h.apiUpdateDomainAdmin},
		{"DELETE", "/api/v1/domain-admins/{username}/{domain}", superOnly, h.apiDeleteDomainAdmin},

		// Transports: a superadmin's.
		{"GET", "/api/v1/transports", superOnly, h.apiListTransports},
		{"POST", "/api/v1/transports", superOnly, h.apiCreateTransport},
		{"GET", "/api/v1/transports/{key}", superOnly, h.apiGetTransport},
		{"PATCH", "/api/v1/transports/{key}", superOnly, h.apiUpdateTransport},
		{"DELETE", "/api/v1/transports/{key}", superOnly, h.apiDeleteTransport},

		// The audit log, scoped by its domain column.
		{"GET", "/api/v1/audit", anyAdmin, h.apiListAudit},

		// CSV export and import (dry run first).
		{"GET", "/api/v1/csv/mailboxes", anyAdmin, h.apiExportMailboxes},
		{"POST", "/api/v1/csv/mailboxes", anyAdmin, h.apiImportMailboxes},
		{"GET", "/api/v1/csv/aliases", anyAdmin, h.apiExportAliases},
		{"POST", "/api/v1/csv/aliases", anyAdmin, h.apiImportAliases},

		// Mailbox self-service.
		{"GET", "/api/v1/self", mailboxSession, h.apiSelf},
		{"PUT", "/api/v1/self/password", mailboxSession, h.apiSelfPassword},
		{"GET", "/api/v1/self/vacation", mailboxSession, h.apiSelfGetVacation},
		{"PUT", "/api/v1/self/vacation", mailboxSession, h.apiSelfPutVacation},
		{"DELETE", "/api/v1/self/vacation", mailboxSession, h.apiSelfDeleteVacation},
		{"GET", "/api/v1/self/forwarding", mailboxSession, h.apiSelfGetForwarding},
		{"PUT", "/api/v1/self/forwarding", mailboxSession, h.apiSelfPutForwarding},
		{"DELETE", "/api/v1/self/forwarding", mailboxSession, h.apiSelfDeleteForwarding},
		{"GET", "/api/v1/self/app-passwords", mailboxSession, h.apiSelfListAppPasswords},
		{"POST", "/api/v1/self/app-passwords", mailboxSession, h.apiSelfCreateAppPassword},
		{"DELETE", "/api/v1/self/app-passwords/{id}", mailboxSession, h.apiSelfDeleteAppPassword},
	}, h.uiRoutes()...)
}

// isUI reports whether rt is a page of the web UI (everything but the API
// and the health checks): its errors are HTML pages, and an anonymous
// request is sent to the login page.
func (rt route) isUI() bool { return isUIPath(rt.pattern) }

// isUIPath reports whether a request path (or pattern) belongs to the web
// UI.
func isUIPath(path string) bool {
	return !strings.HasPrefix(path, "/api/") && path != "/healthz" && path != "/readyz"
}

// buildMux registers every route of h.routes, each behind authentication
// and its access rule, and a JSON 404/405 for everything else.
func (h *Handler) buildMux() (*http.ServeMux, error) {
	mux := http.NewServeMux()
	paths := http.NewServeMux() // path patterns only, to tell 404 from 405
	allowed := map[string][]string{}
	seen := map[string]bool{}
	for _, rt := range h.routes {
		if seen[rt.key()] {
			return nil, fmt.Errorf("admin: route %s registered twice", rt.key())
		}
		seen[rt.key()] = true
		if rt.access == 0 || rt.handle == nil {
			return nil, fmt.Errorf("admin: route %s has no access rule or handler", rt.key())
		}
		mux.Handle(rt.key(), h.wrap(rt))
		if _, ok := allowed[rt.pattern]; !ok {
			paths.Handle(rt.pattern, http.NotFoundHandler())
		}
		allowed[rt.pattern] = append(allowed[rt.pattern], rt.method)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, pat := paths.Handler(r); pat != "" {
			methods := slices.Clone(allowed[pat])
			if slices.Contains(methods, "GET") {
				methods = append(methods, "HEAD")
			}
			w.Header().Set("Allow", strings.Join(methods, ", "))
			err := &apiError{Status: http.StatusMethodNotAllowed, Code: codeMethod, Message: "method not allowed"}
			if isUIPath(r.URL.Path) {
				h.uiErrorPage(w, r, nil, err)
				return
			}
			writeError(w, r, h.log, err)
			return
		}
		if isUIPath(r.URL.Path) {
			h.uiErrorPage(w, r, nil, errNotFound(""))
			return
		}
		writeError(w, r, h.log, errNotFound(""))
	})
	return mux, nil
}

// wrap authenticates the request, checks the route's access rule and runs
// its handler.
func (h *Handler) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var p *principal
		if rt.access != public {
			var err error
			p, err = h.authenticate(ctx, r, isSecure(r))
			if err == nil {
				err = rt.access.check(p)
			}
			if err != nil {
				if rt.isUI() {
					h.uiDenied(w, r, p, rt.access, err)
					return
				}
				writeError(w, r, h.log, err)
				return
			}
		}
		if err := rt.handle(w, r, p); err != nil {
			if rt.isUI() {
				h.uiErrorPage(w, r, p, err)
				return
			}
			writeError(w, r, h.log, err)
		}
	})
}
