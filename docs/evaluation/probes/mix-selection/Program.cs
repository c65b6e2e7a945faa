using System.Text.Json;
using Microsoft.ML;
using RetriKT.Evaluation;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;
using RetriKT.Samples.Data;
// usage (from the repository root): dotnet run --project docs/evaluation/probes/mix-selection -c Release -- SEED PPO(0/1) OUT.json
int seed = int.Parse(args[0]); bool ppo = args[1] == "1"; string outPath = args[2];
var (teacher, teacherPath, o, task) = ProbeRow.Load(seed, ppo);
using var teacherScope = teacher;
var ml = new MLContext(seed: o.Seed);
ml.Log += (_, e) => { if (e.Message.Contains("Tuned") || e.Message.Contains("Extraction") && e.Message.Contains("kept")) Console.WriteLine(e.Message); };
var pipeline = new RetriKTPipeline(ml, teacher, teacherPath, o);
var extraction = pipeline.ExtractStore(task);
Console.WriteLine($"{DateTime.Now:T} store {extraction.Store.Count}");
using var trained = pipeline.TrainStudent(task, extraction, true);
Console.WriteLine($"{DateTime.Now:T} trained: test {trained.Test.Accuracy:P2}, λ {trained.Student.RetrievalWeight} μ {trained.Student.LexicalRetrievalWeight}");
var (_, heldOut) = RetriKTPipeline.HoldOut(extraction.Store, o.StoreValidationShare, o.Seed);
var labelNames = task.Labels.ToList();
(List<string> Texts, List<int> Labels) Set(IEnumerable<TextPairRow> rows) =>
    (rows.Select(r => r.Text).ToList(), rows.Select(r => labelNames.IndexOf(r.Label)).ToList());
var sets = new Dictionary<string, (List<string> Texts, List<int> Labels)>
{
    ["dev"] = Set(task.Dev), ["held"] = Set(heldOut), ["test"] = Set(task.Test), ["train"] = Set(task.Train),
};
var result = new Dictionary<string, object>();
foreach (var (name, lambda, mu) in new[] { ("head", 0.0, 0.0), ("knn", 1.0, 0.0), ("terms", 0.0, 1.0) })
{
    using var v = trained.Student.WithRetrievalWeight(lambda, mu);
    foreach (var (set, (texts, labels)) in sets)
        result[$"{name}|{set}"] = v.PredictBatch(texts).Select(p => p[1]).ToArray();
}
foreach (var (set, (_, labels)) in sets) result[$"labels|{set}"] = labels;
result["chosen"] = new[] { trained.Student.RetrievalWeight, trained.Student.LexicalRetrievalWeight };
File.WriteAllText(outPath, JsonSerializer.Serialize(result));
Console.WriteLine($"{DateTime.Now:T} wrote {outPath}");
