/*
 * C interface of vitastor-client (libvitastor_client.so).
 *
 * Names and callback types follow Vitastor's vitastor_c.h where the meaning is the same.
 * Differences: the client runs its own threads, so there is no event loop to drive
 * (no *_handle_events); completion callbacks run on one of the library's threads and must
 * not block for long. Buffers passed to read/write must stay valid until the callback.
 * retval is the byte count on success or a negative errno.
 */
#ifndef VITASTOR_C_H
#define VITASTOR_C_H

#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vitastor_c vitastor_c;

typedef void VitastorReadHandler(void *opaque, long retval, uint64_t version);
typedef void VitastorIOHandler(void *opaque, long retval);

/* Connects to etcd ("host:port[/v3]", comma-separated) and loads the cluster state.
 * etcd_prefix may be NULL ("/vitastor"). Returns NULL (and prints why) on failure. */
vitastor_c *vitastor_c_create(const char *etcd_address, const char *etcd_prefix);
void vitastor_c_destroy(vitastor_c *client);

/* Opens an image by name. cb gets a watch handle (cast to long) or a negative errno
 * (-ENOENT for a missing image). The handle stays valid until vitastor_c_close_watch. */
void vitastor_c_watch_inode(vitastor_c *client, const char *image, VitastorIOHandler cb, void *opaque);
void vitastor_c_close_watch(vitastor_c *client, void *handle);
/* Synchronous variants (not in Vitastor's header): a handle, or NULL when the image or
 * pool/inode does not exist. Close with vitastor_c_close_watch. */
void *vitastor_c_open_image(vitastor_c *client, const char *image);
void *vitastor_c_open_inode(vitastor_c *client, uint64_t pool, uint64_t inode);
uint64_t vitastor_c_inode_get_size(void *handle);
uint64_t vitastor_c_inode_get_num(void *handle);
int vitastor_c_inode_get_readonly(void *handle);

/* I/O on a full inode number (pool << 48 | inode). offset and len must be multiples of
 * 4096 and inside the image. */
void vitastor_c_read(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
    struct iovec *iov, int iovcnt, VitastorReadHandler cb, void *opaque);
void vitastor_c_write(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
    uint64_t check_version, struct iovec *iov, int iovcnt, VitastorIOHandler cb, void *opaque);
void vitastor_c_sync(vitastor_c *client, VitastorIOHandler cb, void *opaque);

#ifdef __cplusplus
}
#endif

#endif
