namespace RetriKT.Quickstart;

/// <summary>Command line of the Quickstart.</summary>
public sealed record QuickstartOptions
{
    public string? TeacherPath { get; init; }
    public string? DataFolder { get; init; }
    public string Task { get; init; } = "SST-2";
    public int Seed { get; init; } = 13;
    public string OutputFolder { get; init; } = Path.GetFullPath("retrikt-quickstart");
    public int PpoSteps { get; init; } = 8;
    public int SamplesPerLabel { get; init; } = 64;
    public bool Quick { get; init; }

    public const string Usage = """
        usage: RetriKT.Quickstart [--teacher <HF dir or llama2.c .bin>] [--data <folder> --task <SST-2|CoLA|MRPC|RTE|QNLI|CB|BoolQ> --seed <13>]
                                  [--out <folder>] [--ppo-steps <8>] [--samples-per-label <64>] [--quick]
          no arguments: the embedded café-review task and a teacher pretrained in-process on its unlabeled pool.
          --data: a folder laid out like the shared benchmark data (<Task>/k-shot/16-<seed>/… or <Task>/train32.jsonl …).
        """;

    public static QuickstartOptions Parse(string[] args)
    {
        var o = new QuickstartOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"Option {args[i]} needs a value.");
            int Number(string name) => int.TryParse(Value(), out var n) && n >= 0 ? n : throw new ArgumentException($"Option {name} needs a non-negative integer.");
            o = args[i] switch
            {
                "--teacher" => o with { TeacherPath = Path.GetFullPath(Value()) },
                "--data" => o with { DataFolder = Path.GetFullPath(Value()) },
                "--task" => o with { Task = Value() },
                "--seed" => o with { Seed = Number("--seed") },
                "--out" => o with { OutputFolder = Path.GetFullPath(Value()) },
                "--ppo-steps" => o with { PpoSteps = Number("--ppo-steps") },
                "--samples-per-label" => o with { SamplesPerLabel = Number("--samples-per-label") },
                "--quick" => o with { Quick = true },
                "--help" or "-h" => throw new ArgumentException("RetriKT.MLNet Quickstart"),
                _ => throw new ArgumentException($"Unknown option '{args[i]}'."),
            };
        }
        if (o.TeacherPath is not null && !File.Exists(o.TeacherPath) && !Directory.Exists(o.TeacherPath))
            throw new ArgumentException($"--teacher: '{o.TeacherPath}' does not exist.");
        if (o.DataFolder is not null && !Directory.Exists(o.DataFolder))
            throw new ArgumentException($"--data: folder '{o.DataFolder}' does not exist.");
        if (o.DataFolder is not null && o.TeacherPath is null)
            throw new ArgumentException("--data needs --teacher as well (samples/RetriKT.Evaluation pretrains and caches teachers for the benchmark tasks).");
        return o;
    }
}
