using System.Text.Json;
using Microsoft.ML;
using RetriKT.Evaluation;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;
using RetriKT.Samples.Data;
using TorchSharp;
using static TorchSharp.torch;
// usage (from the repository root): dotnet run --project docs/evaluation/probes/teacher-space -c Release -- SEED PPO(0/1) OUT.json [student]
// With "student": also trains the row's student (as the harness does) and reads its own retrieval space, and a ridge
// readout from its embedding into the teacher's slot space (queries projected, keys the teacher's).
// Diagnostic, reading only: how well does nearest-neighbour voting over the store do when queries and keys are the
// *teacher's* representations? The product never has the teacher at inference; this bounds what a student whose
// retrieval space matched the teacher's could get from the same store, against the student's own retrieval (~72-73 %).
int seed = int.Parse(args[0]); bool ppo = args[1] == "1"; string outPath = args[2];
var (teacher, teacherPath, o, task) = ProbeRow.Load(seed, ppo);
using var teacherScope = teacher;
var pipeline = new RetriKTPipeline(new MLContext(seed: o.Seed), teacher, teacherPath, o);
var extraction = pipeline.ExtractStore(task);
var entries = extraction.Store.Entries;
Console.WriteLine($"{DateTime.Now:T} store {entries.Count}");
var labelNames = task.Labels.ToList();
var test = task.Test.ToList();
var testLabels = test.Select(r => labelNames.IndexOf(r.Label)).ToArray();

// Two teacher spaces: the final hidden state at the verbalizer slot ("<text> It was" → next token), and the mean of the
// final hidden states over the text's own tokens.
(float[][] Slot, float[][] Mean) Features(IReadOnlyList<string> texts)
{
    var tokenizer = teacher.Tokenizer!;
    var rows = texts.Select(t => tokenizer.Encode(t + " It was", true)).ToList();
    var textLengths = texts.Select(t => tokenizer.Encode(t, true).Length).ToArray();
    var slot = new float[texts.Count][]; var mean = new float[texts.Count][];
    var order = Enumerable.Range(0, rows.Count).OrderBy(i => rows[i].Length).ToArray();
    using var noGrad = no_grad();
    foreach (var chunk in order.Chunk(16))
    {
        using var scope = NewDisposeScope();
        int longest = chunk.Max(i => rows[i].Length);
        var ids = new long[chunk.Length * longest]; var mask = new long[chunk.Length * longest];
        for (int j = 0; j < chunk.Length; j++)
        {
            var r = rows[chunk[j]]; int offset = longest - r.Length;
            for (int t = 0; t < r.Length; t++) { ids[j * longest + offset + t] = r[t]; mask[j * longest + offset + t] = 1; }
        }
        var idT = tensor(ids, new long[] { chunk.Length, longest });
        var maskT = tensor(mask, new long[] { chunk.Length, longest });
        var hidden = teacher.Forward(teacher.Embed(idT), maskT, returnHiddenStates: true).HiddenStates!.to(ScalarType.Float32);
        var values = hidden.contiguous().data<float>().ToArray();
        int h = (int)hidden.shape[2];
        for (int j = 0; j < chunk.Length; j++)
        {
            int i = chunk[j], offset = longest - rows[i].Length;
            slot[i] = values.AsSpan((j * longest + longest - 1) * h, h).ToArray();
            var m = new float[h];
            for (int t = offset; t < offset + textLengths[i]; t++)
                for (int d = 0; d < h; d++) m[d] += values[(j * longest + t) * h + d] / textLengths[i];
            mean[i] = m;
        }
    }
    return (slot, mean);
}
static float[] Unit(float[] v) { double n = Math.Sqrt(v.Sum(x => (double)x * x)); return v.Select(x => (float)(x / Math.Max(n, 1e-12))).ToArray(); }

var (storeSlot, storeMean) = Features(entries.Select(e => e.Text ?? "").ToList());
var (testSlot, testMean) = Features(test.Select(r => r.Text).ToList());
Console.WriteLine($"{DateTime.Now:T} features done");
var result = new Dictionary<string, double>();
float[][]? headProbabilities = null;
var spaces = new List<(string Space, float[][] Keys, float[][] Queries)> { ("slot", storeSlot, testSlot), ("mean", storeMean, testMean) };
if (args.Length > 3 && args[3] == "student")
{
    using var trained = pipeline.TrainStudent(task, extraction, true);
    Console.WriteLine($"{DateTime.Now:T} student trained: test {trained.Test.Accuracy:P2}");
    int d = trained.Student.Dimension;
    float[][] Encode(IReadOnlyList<string> texts)
    {
        var flat = new float[texts.Count * d];
        trained.Student.Encode(texts.Select(t => (t, (string?)null)).ToList(), flat);
        return Enumerable.Range(0, texts.Count).Select(i => flat.AsSpan(i * d, d).ToArray()).ToArray();
    }
    var storeStudent = Encode(entries.Select(e => e.Text ?? "").ToList());
    var testStudent = Encode(test.Select(r => r.Text).ToList());
    spaces.Add(("student", storeStudent, testStudent));
    // Ridge readout W = (XᵀX + αI)⁻¹ XᵀY from the student's embedding (+ bias) to the teacher's unit slot features, fitted
    // on the store entries; test queries are projected, the keys stay the teacher's.
    using var scope = NewDisposeScope();
    var x = cat([tensor(storeStudent.SelectMany(v => v).ToArray(), new long[] { entries.Count, d }), ones(entries.Count, 1)], 1).to(ScalarType.Float64);
    var y = tensor(storeSlot.SelectMany(Unit).ToArray(), new long[] { entries.Count, storeSlot[0].Length }).to(ScalarType.Float64);
    var w = linalg.solve(x.t().matmul(x) + eye(d + 1, dtype: ScalarType.Float64) * 1e-2, x.t().matmul(y));
    var q = cat([tensor(testStudent.SelectMany(v => v).ToArray(), new long[] { test.Count, d }), ones(test.Count, 1)], 1).to(ScalarType.Float64).matmul(w).to(ScalarType.Float32);
    var fit = nn.functional.cosine_similarity(x.matmul(w), y, 1).mean().item<double>();
    Console.WriteLine($"ridge readout: mean cosine to the teacher's slot features on the store {fit:F3}");
    result["ridge|fit-cosine"] = fit;
    var qv = q.contiguous().data<float>().ToArray(); int h = storeSlot[0].Length;
    spaces.Add(("student→slot", storeSlot, Enumerable.Range(0, test.Count).Select(i => qv.AsSpan(i * h, h).ToArray()).ToArray()));
    if (args.Length > 4 && args[4] == "regress") spaces.AddRange(Regress(trained.Student));
}

// Fine-tunes the trained student for a few epochs with its distillation loss plus a regression of a linear projection
// of its embedding (48 → 256) onto the teacher's centred, unit slot features of each store entry; then the student's
// projected test queries search the teacher's keys. The head is read too: does the regression help it, or only retrieval?
List<(string Space, float[][] Keys, float[][] Queries)> Regress(RetriKT.MLNet.Student.RetrievalClassifierTransformer student)
{
    var runtime = student.Model;
    int sep = runtime.Tokenizer.Vocabulary.SepId;
    var storeIds = entries.Select(e => runtime.Tokenize(e.Text ?? "", null, out _)).ToList();
    var testIds = test.Select(r => runtime.Tokenize(r.Text, null, out _)).ToList();
    int h = storeSlot[0].Length;
    var centre = new float[h];
    foreach (var v in storeSlot) for (int d = 0; d < h; d++) centre[d] += v[d] / storeSlot.Length;
    float[][] Centred(float[][] x) => x.Select(v => Unit(v.Select((a, d) => a - centre[d]).ToArray())).ToArray();
    var keys = Centred(storeSlot);
    using var model = RetriKT.MLNet.Student.StudentModel.FromRuntime(runtime, CPU);
    using var projection = nn.Linear(model.Config.HiddenSize, h);
    var parameters = model.parameters().Concat(projection.parameters()).ToList();
    using var optimizer = optim.AdamW(parameters, 1e-3, weight_decay: 0.01);
    using var targets = tensor(keys.SelectMany(v => v).ToArray(), new long[] { keys.Length, h });
    using var soft = tensor(entries.SelectMany(e => e.SoftLabel).ToArray(), new long[] { entries.Count, labelNames.Count });
    var random = new Random(1);
    var order = Enumerable.Range(0, entries.Count).ToArray();
    int epochs = int.Parse(Environment.GetEnvironmentVariable("REGRESS_EPOCHS") ?? "6");
    double beta = double.Parse(Environment.GetEnvironmentVariable("REGRESS_WEIGHT") ?? "1", System.Globalization.CultureInfo.InvariantCulture);
    for (int epoch = 0; epoch < epochs; epoch++)
    {
        model.train();
        random.Shuffle(order);
        double kdSum = 0, regSum = 0; int batches = 0;
        foreach (var batch in order.Chunk(32))
        {
            using var scope = NewDisposeScope();
            var (ids, segments, mask) = RetriKT.MLNet.Student.TokenBatch.Collate(batch.Select(i => storeIds[i]).ToList(), sep, CPU);
            var pooled = model.Encode(ids, segments, mask);
            var index = tensor(batch.Select(i => (long)i).ToArray());
            var t = soft.index_select(0, index);
            var kd = -(t * model.Head(pooled).log_softmax(-1)).sum(-1).mean();
            var reg = (1 - nn.functional.cosine_similarity(projection.forward(pooled), targets.index_select(0, index), 1)).mean();
            var loss = kd + reg * beta;
            optimizer.zero_grad(); loss.backward(); optimizer.step();
            kdSum += kd.item<float>(); regSum += reg.item<float>(); batches++;
        }
        Console.WriteLine($"{DateTime.Now:T} regress epoch {epoch + 1}: kd {kdSum / batches:F4}, 1 - cos {regSum / batches:F4}");
    }
    model.eval();
    (float[][] Projected, float[][] Probabilities) Read(List<int[]> rows)
    {
        var projected = new List<float[]>(); var probabilities = new List<float[]>();
        using var noGrad = no_grad();
        foreach (var chunk in rows.Chunk(128))
        {
            using var scope = NewDisposeScope();
            var (ids, segments, mask) = RetriKT.MLNet.Student.TokenBatch.Collate(chunk.ToList(), sep, CPU);
            var pooled = model.Encode(ids, segments, mask);
            var p = projection.forward(pooled).contiguous().data<float>().ToArray();
            var q = model.Head(pooled).softmax(-1).contiguous().data<float>().ToArray();
            for (int i = 0; i < chunk.Length; i++) { projected.Add(p.AsSpan(i * h, h).ToArray()); probabilities.Add(q.AsSpan(i * labelNames.Count, labelNames.Count).ToArray()); }
        }
        return (projected.ToArray(), probabilities.ToArray());
    }
    var (testProjected, testHead) = Read(testIds);
    var (storeProjected, _) = Read(storeIds);
    double headAccuracy = testHead.Select((p, i) => Array.IndexOf(p, p.Max()) == testLabels[i] ? 1.0 : 0.0).Average();
    Console.WriteLine($"regressed student's head: test accuracy {headAccuracy:P1}");
    result["regress|head"] = headAccuracy;
    headProbabilities = testHead;
    return [("regressed→teacher keys", keys, testProjected), ("regressed→own keys", storeProjected, testProjected)];
}
foreach (var (space, keys, queries) in spaces)
{
    // Cosine similarities of every test sentence to every store entry, and each one's 64 nearest.
    float[] simValues; long[] simIndices;
    using (var scope = NewDisposeScope())
    {
        var kT = tensor(keys.SelectMany(Unit).ToArray(), new long[] { keys.Length, keys[0].Length });
        var qT = tensor(queries.SelectMany(Unit).ToArray(), new long[] { queries.Length, queries[0].Length });
        var (v, ix) = qT.matmul(kT.t()).topk(64, dim: 1);
        simValues = v.contiguous().data<float>().ToArray(); simIndices = ix.contiguous().data<long>().ToArray();
    }
    foreach (int neighbours in new[] { 16, 64 })
        foreach (double tau in new[] { 0.02, 0.05, 0.1 })
        {
            int correct = 0, mixed = 0;
            for (int i = 0; i < queries.Length; i++)
            {
                double max = simValues[i * 64]; var vote = new double[labelNames.Count];
                for (int n = 0; n < neighbours; n++)
                {
                    double w = Math.Exp((simValues[i * 64 + n] - max) / tau);
                    var soft = entries[(int)simIndices[i * 64 + n]].SoftLabel;
                    for (int l = 0; l < vote.Length; l++) vote[l] += w * soft[l];
                }
                if (Array.IndexOf(vote, vote.Max()) == testLabels[i]) correct++;
                if (space.StartsWith("regressed") && headProbabilities is not null)
                {
                    // An even mix of the regressed student's head and its retrieval (reading only).
                    double total = vote.Sum();
                    var mix = vote.Select((v, l) => 0.5 * v / total + 0.5 * headProbabilities[i][l]).ToArray();
                    if (Array.IndexOf(mix, mix.Max()) == testLabels[i]) mixed++;
                }
            }
            if (space.StartsWith("regressed") && headProbabilities is not null)
            {
                result[$"{space}|mix0.5|k{neighbours}|tau{tau}"] = (double)mixed / queries.Length;
                Console.WriteLine($"{space}, k {neighbours}, τ {tau}: even mix with the head {(double)mixed / queries.Length:P1}");
            }
            result[$"{space}|k{neighbours}|tau{tau}"] = (double)correct / queries.Length;
            Console.WriteLine($"{space} space, k {neighbours}, τ {tau}: test accuracy {(double)correct / queries.Length:P1}");
        }
}
File.WriteAllText(outPath, JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
