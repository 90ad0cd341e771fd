/*-------------------------------------------------------------------------
 *
 * redact.h
 *	  Keeping a refused secret's statement out of the server log.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_REDACT_H
#define BILLOGRAM_REDACT_H

extern void bg_install_log_redaction(void);

#endif							/* BILLOGRAM_REDACT_H */
