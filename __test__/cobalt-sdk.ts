// Compiled under `--strict` by `npm test` (tsc -p __test__/tsconfig.json), never executed: code
// typed against Cobalt's Node SDK (`@cobaltio/cobalt` 1.3.0) compiles against linkvault's
// `Client`. The SDK's declarations are written here from its documented shapes (its
// `src/Apis/types.ts` and the method signatures of `src/Apis/index.ts`); the package itself is
// not a dependency. Where linkvault's types differ, the difference is pinned by a
// `@ts-expect-error` below and explained in README ("Cobalt's Node SDK types").
import { Client } from 'linkvault'

/** Cobalt's Node SDK types, as documented. */
namespace CobaltSdk {
  export type createLinkedAccountPayload = {
    linked_account_id: string
    name?: string
    udf?: Record<string, any>
    your_app?: {
      app_id: string
      auth_credentials: Record<string, any>
    }
  }
  /** The SDK's create/upsert return type: a placeholder no response has. */
  export type LinkedAccount = { id: number; title: string; body: string; userId: number }
  export type Integration = {
    refresh_token_expired: boolean
    _id: string
    type: string
    name: string
    icon: string
    identifier?: string
    is_default: boolean
    createdAt: string
    updatedAt: string
  }
  export type GetLinkedAccount = {
    _id: string
    associated_org: string
    account_id: string
    environment: string
    name: string
    integrations?: Integration[]
    udf?: Record<string, any>
    createdAt: string
    updatedAt: string
  }
  export type GetAllLinkedAccounts = {
    docs: GetLinkedAccount[]
    totalDocs: number
    limit: number
    totalPages: number
    page: number
    pagingCounter: number
    hasPrevPage: boolean
    hasNextPage: boolean
    prevPage: number
    nextPage: number
  }
  export interface paginationOptions {
    page?: number
    limit?: number
  }
  export type SuccessResponse = { message: string }
  export type ErrorResponse = { status_code: number; error_type: string; message: string; request_id: string }
  export type getTokenForLinkedAccountPayload = { linked_account_id: string }
  export type getTokenForLinkedAccountResponse = { token: string }

  /** The linked-account and token methods of the SDK's `Cobalt` class. */
  export type Apis = {
    createLinkedAccount: (createLinkedAccountPayload: createLinkedAccountPayload) => Promise<LinkedAccount>
    upsertLinkedAccount: (upsertLinkedAccountPayload: createLinkedAccountPayload) => Promise<LinkedAccount>
    getAllLinkedAccounts: (options?: paginationOptions) => Promise<GetAllLinkedAccounts>
    getLinkedAccountById: (linked_account_id: string) => Promise<GetLinkedAccount>
    deleteLinkedAccount: (linked_account_id: string) => Promise<SuccessResponse | ErrorResponse>
    getTokenForLinkedAccount: (payload: getTokenForLinkedAccountPayload) => Promise<getTokenForLinkedAccountResponse>
  }
}

/**
 * The SDK's types with linkvault's documented differences applied (README): create/upsert
 * return the account (not the placeholder), `name` is absent when the account has none, and the
 * paginated envelope's `prevPage`/`nextPage` are null at the ends.
 */
type Account = Omit<CobaltSdk.GetLinkedAccount, 'name'> & { name?: string }
type Page = Omit<CobaltSdk.GetAllLinkedAccounts, 'docs' | 'prevPage' | 'nextPage'> & {
  docs: Account[]
  prevPage: number | null
  nextPage: number | null
}
type ApisAsLinkvault = Omit<CobaltSdk.Apis, 'createLinkedAccount' | 'upsertLinkedAccount' | 'getAllLinkedAccounts' | 'getLinkedAccountById'> & {
  createLinkedAccount: (createLinkedAccountPayload: CobaltSdk.createLinkedAccountPayload) => Promise<Account>
  upsertLinkedAccount: (upsertLinkedAccountPayload: CobaltSdk.createLinkedAccountPayload) => Promise<Account>
  getAllLinkedAccounts: (options?: CobaltSdk.paginationOptions) => Promise<Page>
  getLinkedAccountById: (linked_account_id: string) => Promise<Account>
}

declare const client: Client

// Each method as a function of the SDK's type: parameters are checked contravariantly (an SDK
// payload must be accepted as is), results covariantly (a result must be what SDK code reads).
export const asSdk: ApisAsLinkvault = {
  createLinkedAccount: (p) => client.createLinkedAccount(p),
  upsertLinkedAccount: (p) => client.upsertLinkedAccount(p),
  getAllLinkedAccounts: (o) => client.getAllLinkedAccounts(o),
  getLinkedAccountById: (id) => client.getLinkedAccountById(id),
  deleteLinkedAccount: (id) => client.deleteLinkedAccount(id),
  getTokenForLinkedAccount: (p) => client.getTokenForLinkedAccount(p),
}
// The client itself, where the SDK's object is expected (same names, compatible methods).
export const sameNames: ApisAsLinkvault = client

// Where the SDK's own types and linkvault's differ, they differ exactly here (README says why).
export const differences = {
  // @ts-expect-error create returns the account, not the SDK's placeholder { id, title, body, userId }
  create: ((p) => client.createLinkedAccount(p)) satisfies CobaltSdk.Apis['createLinkedAccount'],
  // @ts-expect-error upsert returns the account, not the SDK's placeholder
  upsert: ((p) => client.upsertLinkedAccount(p)) satisfies CobaltSdk.Apis['upsertLinkedAccount'],
  // @ts-expect-error name is absent on an account created without one (the SDK types it always present)
  get: ((id) => client.getLinkedAccountById(id)) satisfies CobaltSdk.Apis['getLinkedAccountById'],
  // @ts-expect-error prevPage/nextPage are null at the ends (the SDK types them as numbers)
  page: ((o) => client.getAllLinkedAccounts(o)) satisfies CobaltSdk.Apis['getAllLinkedAccounts'],
}

// The SDK's payload types are accepted unchanged, including seed 000's example.
const seed000: CobaltSdk.createLinkedAccountPayload = {
  linked_account_id: 'user@example.com',
  name: 'User2',
  udf: { phone: '1234567890', address: '121, Queen Street' },
  your_app: { app_id: 'app_1', auth_credentials: { Authorization: 'Bearer …' } },
}
void client.upsertLinkedAccount(seed000)
// linkvault requires auth_credentials in your_app, as Cobalt's API does.
// @ts-expect-error your_app without auth_credentials
void client.upsertLinkedAccount({ linked_account_id: 'x', your_app: { app_id: 'app_1' } })
