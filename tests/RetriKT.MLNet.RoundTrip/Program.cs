// Usage: RetriKT.MLNet.RoundTrip <model.zip> <input.idv> <output-folder> [engine-contract]
// Writes transform.txt, engine.txt (when a contract is given), resaved.txt (Transform after re-save + reload) and
// types.txt (the loaded transformer chain). Exit code 0 on success; any exception is printed and exits 1.
using Microsoft.ML;
using RetriKT.MLNet.RoundTrip;

if (args.Length < 3)
{
    Console.Error.WriteLine("usage: RetriKT.MLNet.RoundTrip <model.zip> <input.idv> <output-folder> [engine-contract]");
    return 2;
}
try
{
    var (modelPath, inputPath, outDir) = (args[0], args[1], args[2]);
    Directory.CreateDirectory(outDir);
    var mlContext = new MLContext(seed: 1);
    var model = mlContext.Model.Load(modelPath, out _);
    var input = mlContext.Data.LoadFromBinary(inputPath);
    File.WriteAllLines(Path.Combine(outDir, "types.txt"), Describe(model));
    File.WriteAllLines(Path.Combine(outDir, "transform.txt"), DataViewDump.Rows(model.Transform(input)));
    if (args.Length > 3)
        File.WriteAllLines(Path.Combine(outDir, "engine.txt"), EngineContracts.Predict(args[3], mlContext, model, input));

    var resavedPath = Path.Combine(outDir, "resaved.zip");
    mlContext.Model.Save(model, input.Schema, resavedPath);
    var reloaded = new MLContext(seed: 2).Model.Load(resavedPath, out _);
    File.WriteAllLines(Path.Combine(outDir, "resaved.txt"), DataViewDump.Rows(reloaded.Transform(input)));
    (model as IDisposable)?.Dispose();
    (reloaded as IDisposable)?.Dispose();
    return 0;
}
catch (Exception e)
{
    Console.Error.WriteLine(e.ToString());
    return 1;
}

static IEnumerable<string> Describe(ITransformer model) => model is IEnumerable<ITransformer> chain
    ? chain.Select(t => t.GetType().FullName ?? "?")
    : [model.GetType().FullName ?? "?"];
