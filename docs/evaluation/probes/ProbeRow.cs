using RetriKT.Evaluation;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;
using RetriKT.Samples.Data;

/// <summary>
/// What the probes share (compiled into each): the harness's SST-2 stand-in teacher, the pipeline options of the
/// harness's <c>retrikt</c> (no PPO) or <c>retrikt-ppo</c> row, its cached extractions, and the seed's few-shot task.
/// Run from the repository root.
/// </summary>
internal static class ProbeRow
{
    public static (TeacherModel Teacher, string TeacherPath, RetriKTPipelineOptions Options, FewShotTask Task) Load(int seed, bool ppo)
    {
        string repo = Directory.GetCurrentDirectory();
        var (teacher, teacherPath) = TeacherBuilder.LoadShipped(repo, "SST-2");
        teacher.RequiresGrad = false;
        var o = HarnessSettings.DefaultPipeline();
        // The retrikt-ppo row's PPO settings are the harness's defaults (HarnessSettings); the retrikt row has no PPO.
        if (ppo) (o.PpoSteps, o.PpoLearningRate, o.RolloutsPerStep) = (HarnessSettings.DefaultPpoSteps, HarnessSettings.DefaultPpoLearningRate, HarnessSettings.DefaultPpoRolloutsPerStep);
        else o.PpoSteps = 0;
        o.WorkDirectory = Environment.GetEnvironmentVariable("HOME") + "/.cache/retrikt/work";
        var task = FewShotBenchmarks.Load(Path.Combine(repo, "../shared/data"), "SST-2", seed);
        return (teacher, teacherPath, o, task);
    }
}
