"""How a job runs on the machine: the device, the numerical path (precision, memory format,
CUDA graphs) and its timing, the process's threads and memory, and the state that lets a
killed training job resume."""
