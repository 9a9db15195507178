// Where Auth may send a browser after a link: GoTrue's GetReferrer and IsRedirectURLValid. The
// site_url's own origin, loopback addresses (any port, RFC 8252) and additional_redirect_urls
// (globs) are allowed; anything else falls back to site_url.
import type { AuthConfig } from './config.ts';

function parse(value: string): URL | null {
  try {
    return new URL(value);
  } catch {
    return null;
  }
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** A glob of additional_redirect_urls as GoTrue compiles it: `*` stops at `.` and `/`, `**` does not. */
function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      out += '.*';
      i++;
    } else if (c === '*') out += '[^./]*';
    else if (c === '?') out += '[^./]';
    else out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

export function isRedirectUrlValid(config: AuthConfig, redirectUrl: string): boolean {
  if (!redirectUrl) return false;
  const base = parse(config.siteUrl);
  const ref = parse(redirectUrl);
  if (!base || !ref) return false;
  if (base.hostname === ref.hostname && base.protocol === ref.protocol && (base.port === ref.port || isLoopback(ref.hostname))) {
    return true;
  }
  const hostname = ref.hostname.replace(/^\[|\]$/g, '');
  const isHttp = ref.protocol === 'http:' || ref.protocol === 'https:';
  if (/^\d+$/.test(hostname)) return false;
  if (/^[\d.]+$/.test(hostname) || hostname.includes(':')) return isLoopback(hostname);
  if (isHttp && !/^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/.test(hostname)) return false;
  const withoutFragment = redirectUrl.split('#')[0];
  return config.additionalRedirectUrls.some((pattern) => globToRegExp(pattern).test(withoutFragment));
}

/** The redirect_to of the request (header, then query), else its Referer, else site_url. */
export function referrer(config: AuthConfig, req: Request, url: URL, bodyRedirectTo = ''): string {
  for (const candidate of [req.headers.get('redirect_to') ?? '', url.searchParams.get('redirect_to') ?? '', bodyRedirectTo]) {
    if (isRedirectUrlValid(config, candidate)) return candidate;
  }
  const referer = req.headers.get('referer') ?? '';
  if (isRedirectUrlValid(config, referer)) return referer;
  return config.siteUrl;
}
