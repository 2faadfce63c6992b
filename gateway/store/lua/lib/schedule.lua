-- Write an arq job in arq's own format (the job key, then the queue entry scored by its run
-- time), unless the job or its result exists, as arq's enqueue_job does. Returns 1 when written.
local function schedule(queue, job_id, payload, score)
  local jk = {{ARQ_JOB}} .. job_id
  if redis.call('EXISTS', jk, {{ARQ_RESULT}} .. job_id) > 0 then return 0 end
  local ttl = math.max(0, math.floor(score - tonumber(redis.call('TIME')[1]) * 1000)) + {{ARQ_JOB_TTL_MS}}
  redis.call('SET', jk, payload, 'PX', ttl)
  redis.call('ZADD', queue, score, job_id)
  return 1
end
