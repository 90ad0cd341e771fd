/*-------------------------------------------------------------------------
 *
 * invoice.h
 *	  What the journal keeps of an invoice: a summary of Billogram's reply.
 *
 * Plain C with no PostgreSQL or jansson dependency (it reads the reply with
 * json_span.c), so that it can be fuzzed and benchmarked on its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_INVOICE_H
#define BILLOGRAM_INVOICE_H

#include <stddef.h>

/*
 * The summary of an invoice, given the text of its JSON object (the "data"
 * of a successful reply): malloc'd compact JSON text, or NULL when out of
 * memory or when data is not a valid JSON object.
 *
 * The summary is an object with those of the invoice's members id,
 * invoice_no, state, currency, total_sum, remaining_sum, rounding_value,
 * detailed_sums and updated_at that are present and not null, then "events":
 * for each element of the invoice's "events" array that is an object, an
 * object with its type, created_at, event_uuid and, as "amount", its
 * data.amount, each when present and not null.  "events" is [] when the
 * invoice has none or they are not an array.
 *
 * Values are the reply's own text with whitespace between tokens removed, so
 * numbers stay exactly as Billogram wrote them.  A member given more than
 * once is read at its first occurrence.  No names, addresses, e-mail
 * addresses or identity numbers are in the summary: only what says which
 * invoice it is and what was paid.
 */
extern char *bg_invoice_summary(const char *data, size_t len);

#endif							/* BILLOGRAM_INVOICE_H */
