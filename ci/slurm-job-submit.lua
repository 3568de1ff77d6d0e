-- Installed by ci/slurm as /etc/slurm/job_submit.lua: MeluXina's submission rules, as its users meet
-- them, for the MeluXina-shaped test cluster. Jobs for the cpu and gpu partitions need a project
-- account (-A) and a QOS (-q); gpu jobs must ask for GPUs. The debug partition keeps no rules.
local accounts = { p200001 = true }
local qos = { default = true, short = true, dev = true, test = true }

function slurm_job_submit(job_desc, part_list, submit_uid)
  local part = job_desc.partition
  if part ~= "cpu" and part ~= "gpu" then
    return slurm.SUCCESS
  end
  if job_desc.account == nil or not accounts[job_desc.account] then
    slurm.log_user("partition " .. part .. " needs -A/--account with your project (p200001 here)")
    return slurm.ERROR
  end
  if job_desc.qos == nil or not qos[job_desc.qos] then
    slurm.log_user("partition " .. part .. " needs -q/--qos: default, short, dev or test")
    return slurm.ERROR
  end
  local gres = job_desc.tres_per_node or ""
  if part == "gpu" and not string.find(gres, "gpu") then
    slurm.log_user("the gpu partition needs GPUs: --gres=gpu:N")
    return slurm.ERROR
  end
  return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  return slurm.SUCCESS
end
