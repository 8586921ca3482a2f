namespace Squeeze.Bench;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine("usage: Squeeze.Bench SUITE");
        return args.Length == 0 ? 2 : 0;
    }
}
