// Imported first by main.ts. A blocked write on the virtio-serial port (the host stopped reading)
// and a blocked read (waiting for host bytes) each hold a libuv threadpool thread for as long as
// they last; with the default of 4 threads, SFTP and DNS would starve. libuv reads this variable
// when the pool is first used, so it must be set before any asynchronous fs call.
if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = '32';
export {};
